"""Real univariate series: loading, invertible transforms, season detection, naive forecasts, metrics.

Everything here is NumPy (float64) and model-free; ``experiments/forecast.py`` puts an LSTM on top.
Names end in their shape: ``x_T`` is a series of T values, ``z_H`` a forecast of H values.

The forecasting recipe (``transform_candidates``, ``block_forecast``) in short:

* The last ``test_size`` points are the test; every transform and every choice below sees only
  the training part before them.
* The season comes from ``--season`` or from the autocorrelation of the (detrended) training part.
* Transforms must extrapolate: differencing (seasonal when there is a season), removal of the
  mean seasonal profile, log, standard scaling.
  ``transform_candidates`` offers one undifferenced and one differenced chain (log or not, judged
  by model-free stand-ins on a validation span at the end of the training part); the experiment
  trains a model on each and keeps the one that forecasts that validation span better.
* Forecasts are multi-step by blocks: the model emits ``horizon`` values at once (direct, MIMO);
  when the span to forecast is longer, each block is appended to the history and the next is
  forecast from it. With ``horizon=1`` this is the classic recursive strategy.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from lstm_jax.errors import ConfigError, DataError, MissingValuesWarning

# Fields that mean "no value here", besides an empty one (compared case-insensitively).
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
MISSING_POLICIES = ("interpolate", "error")


# -- loading --------------------------------------------------------------------------------------

@dataclasses.dataclass
class LoadedSeries:
    """A column of a CSV file: ``values_T`` (float64, gaps filled), optional ``dates_T`` (strings)."""

    values_T: np.ndarray
    column: str
    path: str
    dates_T: list[str] | None = None
    num_missing: int = 0
    missing_lines: list[int] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values_T)


def parse_number(field: str, where: str) -> float:
    """A finite float, or NaN for a missing-value token (``MISSING_TOKENS``); anything else is a
    DataError that starts with ``where``."""
    field = field.strip()
    if field.lower() in MISSING_TOKENS:
        return float("nan")
    try:
        value = float(field)
    except ValueError:
        raise DataError(f"{where} is {field!r}, not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where} is {field!r}, not a finite number")
    return value


def load_csv(path: str | os.PathLike, column: str, date_column: str | None = None,
             missing: str = "interpolate") -> LoadedSeries:
    """Reads one numeric column of a CSV file with a header row.

    Empty fields (and NA, NaN, null, ?) are missing values. ``missing='interpolate'`` fills them
    linearly between their neighbours (a gap at either end takes the nearest value) and warns
    with their count (``MissingValuesWarning``); ``missing='error'`` refuses them. Every problem
    with the file is one ``DataError`` that names the file and, where it helps, the line.
    """
    if missing not in MISSING_POLICIES:
        raise ConfigError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"no such file: {path}")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory, not a CSV file")
    header, rows = read_csv_rows(path)
    col = _column_index(header, column, path)
    date_col = None if date_column is None else _column_index(header, date_column, path)
    body = rows[1:]
    if not body:
        raise DataError(f"{path} has a header but no rows")

    values, dates, missing_lines = [], [], []
    for line, row in body:
        if len(row) < len(header):
            raise DataError(f"{path} line {line}: {len(row)} fields where the header has {len(header)}")
        value = parse_number(row[col], f"{path} line {line}: {column}")
        if math.isnan(value):
            missing_lines.append(line)
        values.append(value)
        if date_col is not None:
            dates.append(row[date_col].strip())

    values_T = np.asarray(values, np.float64)
    if missing_lines:
        if missing == "error":
            shown = ", ".join(map(str, missing_lines[:5])) + (" ..." if len(missing_lines) > 5 else "")
            raise DataError(f"{path}: {_count(len(missing_lines), 'missing value')} in column {column} (lines {shown}); "
                            f"fill them or allow linear interpolation with --missing=interpolate")
        values_T = interpolate_missing(values_T, where=f"{path}, column {column}")
        warnings.warn(f"{_count(len(missing_lines), 'missing value')} in column {column} of {path} "
                      f"were filled by linear interpolation", MissingValuesWarning, stacklevel=2)
    return LoadedSeries(values_T, column, path, dates or None, len(missing_lines), missing_lines)


def read_csv_rows(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A CSV file's header and every non-blank row after it as (line number, cells); one-line errors."""
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark that would stick to the first name.
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(reader.line_num, row) for reader in [csv.reader(f)] for row in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a readable CSV text file: {e}") from None
    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path} is empty")
    return [name.strip() for name in rows[0][1]], rows


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _column_index(header: list[str], name: str, path: str) -> int:
    if name not in header:
        raise DataError(f"no column {name!r} in {path}; available: {', '.join(header)}")
    return header.index(name)


def interpolate_missing(x_T: np.ndarray, where: str = "the series") -> np.ndarray:
    """NaNs -> linear interpolation between the nearest known values (constant beyond the ends)."""
    x_T = np.asarray(x_T, np.float64).copy()
    known = np.isfinite(x_T)
    if known.sum() < 2:
        raise DataError(f"{where} has fewer than two values to interpolate between")
    t = np.arange(len(x_T))
    x_T[~known] = np.interp(t[~known], t[known], x_T[known])
    return x_T


# -- transforms -----------------------------------------------------------------------------------

class Transform:
    """An invertible map of a series, fitted on a training part.

    ``forward(x_T)`` may drop the first ``drops`` values (differencing needs a past).
    ``inverse(z_H, history)`` maps H transformed values that directly follow ``history`` (the
    untransformed values before them, at this transform's input) back to this transform's input.
    """

    name = "transform"
    drops = 0

    def fit(self, x_T: np.ndarray) -> Transform:
        return self

    def forward(self, x_T: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def inverse(self, z_H: np.ndarray, history: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Log(Transform):
    """Natural log; for positive series whose variations grow with their level."""

    name = "log"

    def fit(self, x_T):
        self._check(x_T, "the training part")
        return self

    @staticmethod
    def _check(x_T, what):
        bad = int(np.sum(np.asarray(x_T) <= 0))
        if bad:
            raise DataError(f"the log transform needs positive values, but {what} has {bad} values <= 0")

    def forward(self, x_T):
        self._check(x_T, "the series")
        return np.log(np.asarray(x_T, np.float64))

    def inverse(self, z_H, history):
        return np.exp(np.asarray(z_H, np.float64))


class Difference(Transform):
    """``z[t] = x[t] - x[t - lag]``: lag 1 removes a trend, lag = season a seasonal pattern and a trend."""

    def __init__(self, lag: int = 1):
        if lag < 1:
            raise ConfigError(f"a difference needs a lag >= 1, got {lag}")
        self.lag = self.drops = int(lag)
        self.name = "diff" if lag == 1 else f"diff{lag}"

    def fit(self, x_T):
        if len(x_T) <= self.lag:
            raise DataError(f"differencing at lag {self.lag} needs more than {self.lag} training values, got {len(x_T)}")
        return self

    def forward(self, x_T):
        x_T = np.asarray(x_T, np.float64)
        return x_T[self.lag:] - x_T[: -self.lag]

    def inverse(self, z_H, history):
        if len(history) < self.lag:
            raise DataError(f"undoing a difference at lag {self.lag} needs {self.lag} past values, got {len(history)}")
        # x[t] = z[t] + x[t - lag], where x[t - lag] is history or an already-rebuilt value.
        x = np.concatenate([np.asarray(history, np.float64)[-self.lag:], np.zeros(len(z_H))])
        for h, z in enumerate(np.asarray(z_H, np.float64)):
            x[self.lag + h] = z + x[h]
        return x[self.lag:]


class Deseason(Transform):
    """Subtracts a seasonal profile: ``x[t] - means[t mod season]``, the means fitted on the training part.

    Plain (``detrend=False``): ``means[k]`` is the training mean of phase k. With ``detrend`` (classical
    decomposition): each phase's mean of the series minus its centred moving average over one season,
    so that a trend is not read as seasonality (a plain phase mean of a rising series climbs by the
    slope from phase to phase, and subtracting it leaves a saw-tooth), then shifted so that the means
    average to the training mean (the deseasoned series is centred as the plain one is). ``recent`` > 0
    fits the profile on the last ``recent`` seasons only: a profile that changes slowly, or a period
    that is not a whole number of steps (52 weeks are not a year), is then the recent one.

    Phases count from the first value, so every series passed in must start where the training
    part started (a history, or the training part itself). What remains is the anomaly, which a
    model can forecast towards zero at long horizons, as a climatology does.
    """

    def __init__(self, season: int, *, detrend: bool = False, recent: int = 0):
        if season < 2:
            raise ConfigError(f"deseason needs a season >= 2, got {season}")
        if recent < 0:
            raise ConfigError(f"deseason: recent must be >= 0 seasons, got {recent}")
        self.season, self.detrend, self.recent = int(season), bool(detrend), int(recent)
        self.name = f"deseason{season}"
        self.means = None

    def fit(self, x_T):
        x_T = np.asarray(x_T, np.float64)
        m, T = self.season, len(x_T)
        if T < m:
            raise DataError(f"deseasoning needs one season ({m}) of training values, got {T}")
        phase = np.arange(T) % m
        keep = np.ones(T, bool) if not self.recent else np.arange(T) >= T - self.recent * m
        detrended = self.detrend and T >= 2 * m + 1
        values = x_T
        if detrended:
            # Centred moving average over one season (2 x m for an even m), defined away from the ends.
            w = np.ones(m + 1 - m % 2)
            if m % 2 == 0:
                w[0] = w[-1] = 0.5
            w /= m
            half = len(w) // 2
            trend = np.full(T, np.nan)
            trend[half:T - half] = np.convolve(x_T, w, mode="valid")
            values = x_T - trend
            keep &= np.isfinite(trend)
            if any(not np.any(keep & (phase == k)) for k in range(m)):  # too few recent seasons
                keep = np.isfinite(trend)
        means = np.array([values[keep & (phase == k)].mean() for k in range(m)])
        self.means = means - means.mean() + x_T.mean() if detrended else means
        return self

    def forward(self, x_T):
        x_T = np.asarray(x_T, np.float64)
        return x_T - self.means[np.arange(len(x_T)) % self.season]

    def inverse(self, z_H, history):
        z_H = np.asarray(z_H, np.float64)
        return z_H + self.means[(len(history) + np.arange(len(z_H))) % self.season]


class _Affine(Transform):
    """``(x - offset) / scale``, the two fitted on the training part by ``_fit``: linear both ways."""

    def __init__(self):
        self.offset = self.scale = None

    def _fit(self, x_T) -> tuple[float, float]:
        raise NotImplementedError

    def fit(self, x_T):
        x_T = np.asarray(x_T, np.float64)
        if x_T.size == 0 or not np.all(np.isfinite(x_T)):
            raise DataError(f"cannot fit the {self.name} scaling on an empty or non-finite series")
        self.offset, scale = self._fit(x_T)
        self.scale = scale if scale > 0 else 1.0  # a constant training part: shift only
        return self

    def forward(self, x_T):
        return (np.asarray(x_T, np.float64) - self.offset) / self.scale

    def inverse(self, z_H, history=None):
        """Linear, so no history is needed: ``z * scale + offset``."""
        return np.asarray(z_H, np.float64) * self.scale + self.offset


class Standard(_Affine):
    """``(x - mean) / std`` with the training part's mean and std: linear, so it extrapolates."""

    name = "standard"

    def _fit(self, x_T):
        return float(x_T.mean()), float(x_T.std())

    @property
    def mean(self):
        return self.offset

    @property
    def std(self):
        return self.scale


class MinMax(_Affine):
    """To [0, 1] by the training min and max. Values beyond them map outside [0, 1], which an LSTM
    fitted inside it rarely produces: use it only for series that stay in their training range."""

    name = "minmax"

    def _fit(self, x_T):
        lo = float(x_T.min())
        return lo, float(x_T.max()) - lo


class Chain(Transform):
    """Transforms applied in order; ``inverse`` undoes them in reverse, each with its own history."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)
        self.drops = sum(t.drops for t in self.transforms)
        self.name = ",".join(t.name for t in self.transforms) or "none"

    def fit(self, x_T):
        x = np.asarray(x_T, np.float64)
        for t in self.transforms:
            x = t.fit(x).forward(x)
        if len(x) == 0:
            raise DataError(f"the training part ({len(x_T)} values) is too short for the transform {self.name}")
        return self

    def forward(self, x_T):
        x = np.asarray(x_T, np.float64)
        for t in self.transforms:
            x = t.forward(x)
        return x

    def inverse(self, z_H, history):
        histories = [np.asarray(history, np.float64)]
        for t in self.transforms[:-1]:
            histories.append(t.forward(histories[-1]))
        x = np.asarray(z_H, np.float64)
        for t, past in zip(reversed(self.transforms), reversed(histories)):
            x = t.inverse(x, past)
        return x


TRANSFORM_NAMES = ("none", "log", "diff", "sdiff", "diffK (e.g. diff12)", "deseason", "standard", "minmax")


def parse_transform(spec: str, season: int = 1) -> Chain:
    """``'log,sdiff,standard'`` -> a Chain. ``sdiff`` is a difference at the season's lag."""
    parts = [p.strip().lower() for p in spec.split(",") if p.strip()]
    out: list[Transform] = []
    for p in parts:
        if p == "none":
            continue
        if p == "log":
            out.append(Log())
        elif p == "standard":
            out.append(Standard())
        elif p == "minmax":
            out.append(MinMax())
        elif p == "deseason":
            if season < 2:
                raise ConfigError("the transform deseason needs a season >= 2 (give --season or let it be detected)")
            out.append(Deseason(season))
        elif p == "sdiff":
            if season < 2:
                raise ConfigError("the transform sdiff needs a season >= 2 (give --season or let it be detected)")
            out.append(Difference(season))
        elif p.startswith("diff") and (p == "diff" or p[4:].isdigit()):
            out.append(Difference(int(p[4:] or 1)))
        else:
            raise ConfigError(f"unknown transform {p!r}; known: {', '.join(TRANSFORM_NAMES)}")
    return Chain(out)


# -- season ---------------------------------------------------------------------------------------

def autocorrelation(x_T: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation at lags 0..max_lag: [max_lag + 1]."""
    x = np.asarray(x_T, np.float64)
    x = x - x.mean()
    denom = float(np.dot(x, x))
    if denom == 0:
        return np.zeros(max_lag + 1)
    return np.array([np.dot(x[: len(x) - k], x[k:]) / denom for k in range(max_lag + 1)])


def detect_season(x_T: np.ndarray, *, max_period: int | None = None, min_acf: float = 0.3, min_dip: float = 0.2) -> int:
    """The seasonal period of a training series from its autocorrelation; 1 when there is none.

    Two views of the series are read, because a trend hides a season and so does noise: the
    series less its linear trend, and its first difference (which also removes slow cycles, but
    amplifies measurement noise). In each, candidates are local maxima of the autocorrelation at
    lags 2..max_period (default: a third of the series, so that three cycles are seen) that reach
    ``min_acf`` and stand ``min_dip`` above the trough before them (a real season pulls the
    correlation down between lag 0 and lag k; a slowly wandering series does not), and that
    recur at twice the lag (a season repeats; a one-off swing of a random walk does not). The view whose
    best candidate correlates more decides, and in it the shortest lag within 80% of the best:
    multiples of a season (24, 36 for 12) correlate almost as well and must not win over it.
    """
    x = np.asarray(x_T, np.float64)
    n = len(x)
    max_period = n // 3 if max_period is None else min(max_period, n // 3)
    if max_period < 2:
        return 1
    t = np.arange(n)
    views = [x - np.polyval(np.polyfit(t, x, 1), t), np.diff(x)]
    best_lag, best_acf = 1, -np.inf
    for view in views:
        acf = autocorrelation(view, min(2 * max_period + 1, len(view) - 1))
        candidates = [k for k in range(2, max_period + 1)
                      if acf[k] >= min_acf and acf[k] > acf[k - 1] and acf[k] >= acf[k + 1]
                      and acf[k] - acf[1:k].min() >= min_dip
                      and acf[2 * k - 1 : 2 * k + 2].max() >= min_acf / 2]
        if not candidates:
            continue
        top = max(acf[k] for k in candidates)
        if top > best_acf:
            best_acf = top
            best_lag = next(k for k in candidates if acf[k] >= 0.8 * top)
            # The exact lag, from the correlation at all its multiples (an error of one step grows
            # m-fold at the m-th multiple, noise does not), in the estimate that is not shrunk by
            # (n - k) / n at lag k (which pulls peaks to shorter lags).
            unbiased = acf * len(view) / (len(view) - np.arange(len(acf)))
            lo, hi = max(2, best_lag - best_lag // 10 - 1), min(max_period, best_lag + best_lag // 10 + 1)
            scores = [unbiased[k :: k].mean() for k in range(lo, hi + 1)]
            best_lag = lo + int(np.argmax(scores))
    return best_lag


# -- naive forecasts and metrics ------------------------------------------------------------------

def naive(history_T: np.ndarray, steps: int) -> np.ndarray:
    """The last observed value, repeated: [steps]."""
    return np.full(steps, float(np.asarray(history_T)[-1]))


def seasonal_naive(history_T: np.ndarray, steps: int, season: int) -> np.ndarray:
    """The value one season before, from the last observed season: ``x[T + h - season * ceil((h+1)/season)]``.

    With ``season <= 1`` this is ``naive``.
    """
    history_T = np.asarray(history_T, np.float64)
    if season <= 1:
        return naive(history_T, steps)
    if len(history_T) < season:
        raise DataError(f"a seasonal naive forecast needs one season ({season}) of history, got {len(history_T)}")
    last = history_T[-season:]
    return np.array([last[h % season] for h in range(steps)])


def mase_scale(history_T: np.ndarray, season: int = 1) -> float:
    """The in-sample mean absolute error of the seasonal-naive forecast, ``mean |x[t] - x[t - m]|``.

    ``m`` is ``season`` (1, the naive forecast, for ``season <= 1`` or a history of at most one
    season). This is the denominator of MASE (Hyndman & Koehler 2006; the M4 competition's scale).
    """
    x = np.asarray(history_T, np.float64)
    m = season if 1 < season < len(x) else 1
    if len(x) <= m:
        raise DataError(f"MASE needs at least {m + 1} values of history, got {len(x)}")
    return float(np.mean(np.abs(x[m:] - x[:-m])))


def forecast_metrics(actual_H: np.ndarray, pred_H: np.ndarray, history_T: np.ndarray | None = None,
                     season: int = 1) -> dict[str, float]:
    """MAPE and sMAPE (in %), RMSE and MAE in the units of the series, and MASE given ``history_T``.

    MAPE is NaN when an actual value is 0 (it is undefined there); sMAPE counts 0/0 as 0. MASE is the
    MAE over ``mase_scale(history_T, season)``, the training part's seasonal-naive error (NaN where
    that is 0: a constant history); with ``season=1`` it is scaled by the naive error, as for M1/M3/M4
    yearly data.
    """
    y = np.asarray(actual_H, np.float64)
    p = np.asarray(pred_H, np.float64)
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"actual {y.shape} and predicted {p.shape} must be the same non-empty shape")
    err = p - y
    mape = float(np.mean(np.abs(err) / np.abs(y)) * 100) if np.all(y != 0) else float("nan")
    denom = np.abs(y) + np.abs(p)
    smape = float(np.mean(np.where(denom > 0, 2 * np.abs(err) / np.where(denom > 0, denom, 1), 0.0)) * 100)
    mae = float(np.mean(np.abs(err)))
    out = {"mape": mape, "smape": smape, "rmse": float(np.sqrt(np.mean(err**2))), "mae": mae}
    if history_T is not None:
        scale = mase_scale(history_T, season)
        out["mase"] = mae / scale if scale > 0 else float("nan")
    return out


def interval_metrics(actual_H: np.ndarray, lower_H: np.ndarray, upper_H: np.ndarray) -> dict[str, float]:
    """How a forecast interval did: ``coverage`` (the fraction of actual values inside [lower, upper])
    and ``width`` (the mean of upper - lower, in the units of the series)."""
    y, lo, hi = (np.asarray(a, np.float64) for a in (actual_H, lower_H, upper_H))
    if not (y.shape == lo.shape == hi.shape) or y.size == 0:
        raise ValueError(f"actual {y.shape}, lower {lo.shape} and upper {hi.shape} must be the same non-empty shape")
    return {"coverage": float(np.mean((y >= lo) & (y <= hi))), "width": float(np.mean(hi - lo))}


def naive_forecasts(history_T: np.ndarray, steps: int, season: int) -> dict[str, np.ndarray]:
    """The naive references: ``naive`` and ``seasonal_naive`` (the statistical ones, and both kinds
    together, are in ``lstm_jax.forecast.references``)."""
    return {"naive": naive(history_T, steps), "seasonal_naive": seasonal_naive(history_T, steps, season)}


baseline_forecasts = naive_forecasts  # the name it had before


# -- choosing the transform -----------------------------------------------------------------------

def _profile_forecast(fit_T: np.ndarray, steps: int, season: int) -> np.ndarray:
    """The mean of each phase of the season over the fitting part (the plain mean without a season)."""
    n = len(fit_T)
    if season <= 1:
        return np.full(steps, fit_T.mean())
    phase = np.arange(n) % season
    means = np.array([fit_T[phase == k].mean() for k in range(season)])
    return means[(n + np.arange(steps)) % season]


def _drift_forecast(fit_T: np.ndarray, steps: int, season: int) -> np.ndarray:
    """The last season (or value) plus the mean change per season (or step) so far."""
    lag = max(season, 1)
    drift = (fit_T[-lag:].sum() - fit_T[:lag].sum()) / (len(fit_T) - lag)  # mean of x[t] - x[t - lag]
    h = np.arange(steps)
    return fit_T[len(fit_T) - lag + h % lag] + drift * (h // lag + 1)


@dataclasses.dataclass
class TransformCandidate:
    spec: str  # for parse_transform
    proxy_mae: float  # MAE of its model-free stand-in on the validation span, original units


def transform_candidates(train_T: np.ndarray, season: int, val_size: int) -> list[TransformCandidate]:
    """The transform chains worth training a model with, best stand-in first; uses only ``train_T``.

    Two kinds, each scored by how well a model-free stand-in forecasts the last ``val_size``
    values from the rest (MAE, original units):

    * level (``deseason,standard``, or ``standard`` without a season): the mean seasonal
      profile, what a model of the anomalies from it tends to at long horizons;
    * differenced (``sdiff,standard``, or ``diff,standard`` without a season): the last season
      plus the mean drift, what a model of differences tends to.

    A positive series whose training values span a factor of 2 or more is also scored in logs,
    and a kind takes its log variant when that cuts its error by 2% or more. Standard scaling
    comes last in every chain: it is linear and extrapolates. Too short a series gets
    ``standard`` alone.
    """
    train_T = np.asarray(train_T, np.float64)
    val_size = int(min(val_size, len(train_T) // 3))
    if val_size < 1 or len(train_T) - val_size < max(2 * season, 4):
        return [TransformCandidate("standard", float("nan"))]
    fit, val = train_T[:-val_size], train_T[-val_size:]
    logs = [False, True] if fit.min() > 0 and train_T.max() >= 2 * train_T.min() else [False]
    diff_name = "sdiff" if season > 1 else "diff"
    out = []
    level_name = "deseason,standard" if season > 1 else "standard"
    for kind, stand_in in ((level_name, _profile_forecast), (f"{diff_name},standard", _drift_forecast)):
        best = None
        for use_log in logs:
            f = np.log(fit) if use_log else fit
            pred = stand_in(f, val_size, season)
            mae = float(np.mean(np.abs((np.exp(pred) if use_log else pred) - val)))
            if best is None or mae < 0.98 * best.proxy_mae:
                best = TransformCandidate(("log," if use_log else "") + kind, mae)
        out.append(best)
    return sorted(out, key=lambda c: c.proxy_mae)


# -- multi-step forecasting by blocks -------------------------------------------------------------

def block_forecast(predict_NxW: Callable[[np.ndarray], np.ndarray], z_T: np.ndarray, steps: int, window: int) -> np.ndarray:
    """Forecasts ``steps`` values after ``z_T`` (transformed units) with a model of any horizon.

    ``predict_NxW`` maps windows [N, window] to the next values [N, horizon]. Each call's block is
    appended to the history and the next window is read from it, until ``steps`` are made; with
    horizon 1 this is the recursive strategy, with horizon >= steps the direct one.
    """
    z = list(np.asarray(z_T, np.float64))
    if len(z) < window:
        raise DataError(f"a window of {window} is longer than the {len(z)} values to forecast from")
    out: list[float] = []
    while len(out) < steps:
        block = np.asarray(predict_NxW(np.asarray(z[-window:])[None, :]))[0]
        out.extend(block.tolist())
        z.extend(block.tolist())
    return np.asarray(out[:steps])
