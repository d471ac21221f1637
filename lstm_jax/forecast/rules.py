"""The automatic settings of the forecasting recipes, defined once: window, horizon, epoch, validation.

Two recipes forecast a series (``single``: one LSTM per transform chain, ``--recipe=transforms``;
``recipe``: the ensemble of global LSTMs, ``--recipe=ensemble`` and every panel). They share every
rule here, and differ, deliberately, in one number: the input window of a series without a season.

* The transform-chain recipe was written for long single series (El Niño, CO2, Nile) and reads a
  fixed ``TRANSFORMS_WINDOW_NO_SEASON`` = 24 steps.
* The ensemble recipe was written for short yearly panels (M1: 15 to 58 values, horizon 6) and,
  as N-BEATS sizes its look-backs, reads the horizon (at least ``ENSEMBLE_MIN_WINDOW_NO_SEASON`` = 6
  steps); its members then look back 1, 1.5 and 2 times that.

Both values are recorded in measured figures (benchmarks/forecast_csv.md for the transform chains
on Nile; docs/forecasting.md for the ensemble on Nile and M1), so neither is changed here: each is
named for the recipe that uses it, and ``base_window`` is the one rule that applies them.
"""

from __future__ import annotations

MIN_TRAIN_WINDOWS = 32  # an automatic horizon is shortened until training keeps this many windows
MIN_STEPS_PER_EPOCH = 20  # short data repeat their windows within an epoch, so that patience counts enough steps
MIN_WINDOW_SEASONAL = 16  # two seasons, but at least this many steps
TRANSFORMS_WINDOW_NO_SEASON = 24  # the transform-chain recipe (``single``) without a season
ENSEMBLE_MIN_WINDOW_NO_SEASON = 6  # the ensemble recipe without a season: the horizon, at least this


def base_window(season: int, n_fit: int, no_season: int) -> int:
    """The automatic input window: two seasons (at least ``MIN_WINDOW_SEASONAL`` steps), or
    ``no_season`` steps without a season (``transforms_window`` / ``ensemble_window`` say which);
    at most a third of the ``n_fit`` values the training windows draw on, and at least 2."""
    want = max(2 * season, MIN_WINDOW_SEASONAL) if season > 1 else no_season
    return max(2, min(want, max(n_fit // 3, 2)))


def transforms_window(season: int, n_fit: int) -> int:
    """``base_window`` of the transform-chain recipe: 24 steps without a season."""
    return base_window(season, n_fit, TRANSFORMS_WINDOW_NO_SEASON)


def ensemble_window(season: int, horizon: int, n_fit: int) -> int:
    """``base_window`` of the ensemble recipe: the horizon (at least 6 steps) without a season.
    A panel passes an ``n_fit`` that does not cap (its short series are padded instead)."""
    return base_window(season, n_fit, max(horizon, ENSEMBLE_MIN_WINDOW_NO_SEASON))


def model_horizon(steps: int, n_fit: int, window: int, min_train_windows: int = MIN_TRAIN_WINDOWS) -> int:
    """The values one model call emits when the horizon is automatic: the ``steps`` to forecast,
    shortened until windows of ``window`` inputs over ``n_fit`` values leave ``min_train_windows``
    to train on (longer spans are forecast block by block); at least 1."""
    return max(1, min(steps, n_fit - window - min_train_windows + 1))


def epoch_repeats(n_windows: int, batch_size: int, min_steps: int = MIN_STEPS_PER_EPOCH) -> int:
    """How many times an epoch repeats the ``n_windows`` training windows so that it takes at least
    ``min_steps`` steps of ``batch_size`` (short series; patience then means enough steps)."""
    return max(1, -(-min_steps * batch_size // n_windows))


def val_size(test_size: int, n_train: int, num_series: int = 1) -> int:
    """The automatic validation span at the end of each training part: for one series the test
    span, but at most a quarter of its ``n_train`` training values (at least 1); for a panel the
    test span."""
    return max(1, min(test_size, n_train // 4)) if num_series == 1 else test_size
