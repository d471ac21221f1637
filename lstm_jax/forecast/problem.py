"""What a forecasting run forecasts, read from its files: one series split into training and test
parts (``SeriesSplit``, the transform-chain recipe), or the named series of a panel (``load_problem``
-> ``recipe.Problem``, the ensemble recipe).

The last ``test_size`` values of each series are its test; everything until the scoring (season
detection, the validation span, transforms) reads the values before them only.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings

import numpy as np

from lstm_jax.data import panel as panel_lib
from lstm_jax.data import series as series_lib
from lstm_jax.errors import ConfigError, DataError
from lstm_jax.forecast import rules
from lstm_jax.forecast.recipe import Problem

MIN_TRAIN_VALUES = 8  # a series must keep at least this many values before its test span


def read_series_csv(path: str, column: str, date_column: str | None = None,
                    missing: str = "interpolate") -> series_lib.LoadedSeries:
    """``series.load_csv``, with each warning it raises (the count of interpolated values) printed as
    one ``warning: ...`` line on stderr rather than Python's two-line form."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", series_lib.MissingValuesWarning)
        loaded = series_lib.load_csv(path, column, date_column, missing)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr, flush=True)
    return loaded


@dataclasses.dataclass
class SeriesSplit:
    """One series of a csv file, split: ``train_T`` (fitting part + validation span) and ``test_T``."""

    loaded: series_lib.LoadedSeries
    train_T: np.ndarray
    test_T: np.ndarray
    season: int
    season_source: str  # given | detected
    val_size: int
    path: str

    @classmethod
    def load(cls, path: str, column: str, *, test_size: int, season: int = 0, val_size: int = 0,
             date_column: str | None = None, missing: str = "interpolate") -> SeriesSplit:
        """``season`` 0: detected on the training part; ``val_size`` 0: ``rules.val_size``."""
        if not column:
            raise ConfigError("--dataset=csv:PATH needs --column=NAME")
        if test_size < 1:
            raise ConfigError("--dataset=csv:PATH needs --test_size=N >= 1 (the last N values are the test)")
        if season < 0:
            raise ConfigError(f"--season must be >= 0, got {season}")
        loaded = read_series_csv(path, column, date_column, missing)
        values_T = loaded.values_T
        if len(values_T) - test_size < MIN_TRAIN_VALUES:
            raise DataError(f"{path} has {len(values_T)} values: too few to hold out {test_size} for the test "
                            f"and still train on at least {MIN_TRAIN_VALUES}")
        train_T, test_T = values_T[:-test_size], values_T[-test_size:]
        # Everything until the scoring sees train_T only.
        found = season or series_lib.detect_season(train_T)
        val = val_size or rules.val_size(test_size, len(train_T))
        return cls(loaded, train_T, test_T, found, "given" if season else "detected", val, path)


def load_problem(dataset: str, *, column: str = "", test_size: int = 0, season: int = 0, val_size: int = 0,
                 id_column: str = "", time_column: str = "", covariates: tuple[str, ...] = (),
                 date_column: str = "", missing: str = "interpolate") -> Problem:
    """The named series to forecast (``dataset`` is ``tsf:PATH`` or ``csv:PATH``), their test and
    validation sizes, season and covariates. 0 (or empty) leaves a setting automatic: the test
    span from a .tsf header's @horizon, the season detected on the longest training part (or from
    @frequency), the validation span by ``rules.val_size``."""

    covs = tuple(covariates)
    if test_size < 0 or season < 0 or val_size < 0:
        raise ConfigError("test_size, season and val_size must be >= 0")
    if dataset.startswith("tsf:"):
        if covs:
            raise ConfigError("a .tsf file has no covariate columns")
        path = dataset[len("tsf:"):]
        pan = panel_lib.read_tsf(path)
        test_size = test_size or pan.horizon
        if not test_size:
            raise ConfigError(f"{path} has no @horizon: give --test_size=N")
        season = season or pan.season or 1
        source = {"name": "tsf", "path": os.path.abspath(path), "frequency": pan.frequency, "horizon": pan.horizon}
        names, values, cov = [s.name for s in pan.series], [s.values_T for s in pan.series], None
    else:
        path = dataset[len("csv:"):]
        if not column:
            raise ConfigError("--dataset=csv:PATH needs --column=NAME")
        if test_size < 1:
            raise ConfigError("--dataset=csv:PATH needs --test_size=N >= 1 (the last N values of each series are the test)")
        if id_column or time_column or covs:
            pan = panel_lib.read_long_csv(path, id_column=id_column or None, time_column=time_column or None,
                                          value_column=column, covariates=covs)
            names, values = [s.name for s in pan.series], [s.values_T for s in pan.series]
            cov = [s.covariates_TxC for s in pan.series] if covs else None
            if not id_column:
                names = [column]
        else:
            loaded = SeriesSplit.load(path, column, test_size=test_size, season=season, val_size=val_size,
                                      date_column=date_column or None, missing=missing).loaded
            names, values, cov = [column], [loaded.values_T], None
        longest = max(values, key=len)
        if len(longest) - test_size < MIN_TRAIN_VALUES:
            raise DataError(f"{path}: the longest series has {len(longest)} values, too few to hold out {test_size} "
                            f"for the test and still train on at least {MIN_TRAIN_VALUES}")
        season = season or series_lib.detect_season(longest[:-test_size])
        source = {"name": "csv", "path": os.path.abspath(path), "column": column, "id_column": id_column or None,
                  "time_column": time_column or None, "date_column": date_column or None, "missing": missing,
                  "covariates": list(covs)}
    # One series: a quarter of its training part at most; a panel: the test span (each series' last values).
    n_train = min(len(v) for v in values) - test_size
    val_size = val_size or rules.val_size(test_size, n_train, len(values))
    source.update({"num_series": len(values), "test_size": test_size, "val_size": val_size})
    return Problem(names, values, test_size, season, val_size, cov, covs, source)


def read_series(path: str, source: dict) -> tuple[list[str], list[np.ndarray]]:
    """Every series of a file read as a run read its own (``source``, the ``Problem.source`` it
    recorded: a .tsf panel, a long-format CSV with an id column, or one CSV column), whole: names
    and values [T_i]."""
    if source.get("name") == "tsf":
        pan = panel_lib.read_tsf(path)
        return [s.name for s in pan.series], [s.values_T for s in pan.series]
    column = source["column"]
    if source.get("id_column") or source.get("time_column") or source.get("covariates"):
        pan = panel_lib.read_long_csv(path, id_column=source.get("id_column"), time_column=source.get("time_column"),
                                      value_column=column, covariates=tuple(source.get("covariates") or ()))
        names = [s.name for s in pan.series] if source.get("id_column") else [column]
        return names, [s.values_T for s in pan.series]
    loaded = read_series_csv(path, column, source.get("date_column"), source.get("missing", "interpolate"))
    return [column], [loaded.values_T]
