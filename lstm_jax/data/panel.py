"""Many series at once: readers (Monash ``.tsf``, long-format CSV) and the windows of a global model.

A global model is one network trained on windows drawn from every series of a panel (ES-RNN,
N-BEATS and DeepAR are trained this way). For that to work across series of different scales
each series goes through its own invertible transform (``series.Chain``), fitted on its training
part only, and each window is then expressed relative to its own level (the last value of the
window's input), as ES-RNN divides by its level: a model that sees ``log(x / level)`` learns
growth patterns shared by series of any size.

Names end in their shape: ``x_NxLxD`` are N windows of L steps and D channels, ``y_NxH`` their
targets, ``x_T`` one series of T values.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from lstm_jax.data import series as series_lib
from lstm_jax.errors import ConfigError, DataError

# The seasonal period that goes with a frequency name (Monash's @frequency values, pandas aliases).
FREQUENCY_SEASON = {
    "yearly": 1, "annual": 1, "y": 1, "a": 1,
    "quarterly": 4, "q": 4,
    "monthly": 12, "m": 12,
    "weekly": 52, "w": 52,
    "daily": 7, "d": 7,
    "hourly": 24, "h": 24,
    "half_hourly": 48, "30min": 48,
    "10_minutes": 144, "10min": 144,
    "minutely": 60, "min": 60,
    "4_seconds": 1,
}


@dataclasses.dataclass
class Series:
    """One named series: ``values_T`` (float64, no gaps) and optional ``covariates_TxC``."""

    name: str
    values_T: np.ndarray
    start: str | None = None
    covariates_TxC: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values_T)


@dataclasses.dataclass
class Panel:
    """Series read from one file, with what its header says: ``horizon``, ``frequency``, ``season``."""

    series: list[Series]
    path: str
    horizon: int | None = None
    frequency: str | None = None
    covariate_names: tuple[str, ...] = ()

    @property
    def season(self) -> int | None:
        """The seasonal period of ``frequency`` (None when the frequency is unknown)."""
        return FREQUENCY_SEASON.get((self.frequency or "").lower())

    def __len__(self) -> int:
        return len(self.series)


def _check_file(path: str, what: str) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"no such file: {path}")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory, not a {what} file")
    return path


def _fill(values: list[float], where: str) -> np.ndarray:
    x_T = np.asarray(values, np.float64)
    if np.isnan(x_T).any():
        x_T = series_lib.interpolate_missing(x_T, where=where)
    return x_T


def read_tsf(path: str | os.PathLike) -> Panel:
    """Reads a Monash forecasting archive ``.tsf`` file.

    Lines starting with ``#`` are comments; ``@frequency``, ``@horizon`` and the other ``@`` lines
    form the header until ``@data``; then one series a line, ``name:attr...:v1,v2,...`` (the values
    last, ``?`` for a missing one, filled by linear interpolation). The attribute after the name,
    when the header declares a ``start_timestamp``, is kept as ``start``.
    """
    path = _check_file(path, ".tsf")
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not a readable .tsf text file: {e}") from None
    attributes: list[str] = []
    header: dict[str, str] = {}
    out: list[Series] = []
    in_data = False
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path} line {number}"
        if not in_data:
            if not line.startswith("@"):
                raise DataError(f"{where}: expected a header line (@...) or @data, got {line[:40]!r}")
            key, _, value = line[1:].partition(" ")
            key = key.lower()
            if key == "data":
                in_data = True
            elif key == "attribute":
                attributes.append(value.split()[0] if value.split() else "")
            else:
                header[key] = value.strip()
            continue
        fields = line.split(":")
        if len(fields) < len(attributes) + 1 or len(fields) < 2:
            raise DataError(f"{where}: expected {len(attributes)} attributes and the values separated by ':'")
        # Timestamps may themselves hold ':'; the values are always the last field.
        name, values = fields[0].strip(), fields[-1]
        start = ":".join(fields[1:-1]).strip() or None if len(attributes) > 1 else None
        parsed = [series_lib.parse_number(v, f"{where} ({name})") for v in values.split(",")]
        if not parsed:
            raise DataError(f"{where}: series {name!r} has no values")
        out.append(Series(name, _fill(parsed, f"{path}, series {name}"), start))
    if not in_data:
        raise DataError(f"{path} has no @data line: not a .tsf file")
    if not out:
        raise DataError(f"{path} has a header but no series")
    horizon = None
    if "horizon" in header:
        try:
            horizon = int(header["horizon"])
        except ValueError:
            raise DataError(f"{path}: @horizon is {header['horizon']!r}, not a whole number") from None
        if horizon < 1:
            raise DataError(f"{path}: @horizon must be >= 1, got {horizon}")
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path}: the series name {dup!r} appears more than once")
    return Panel(out, path, horizon, header.get("frequency"))


def read_long_csv(path: str | os.PathLike, *, id_column: str | None, time_column: str | None, value_column: str,
                  covariates: Sequence[str] = ()) -> Panel:
    """Reads a long-format CSV file: one row per (series, time), a column naming the series.

    Rows are grouped by ``id_column`` (one series when it is None) and, within a series, sorted
    by ``time_column`` (numerically when every value is a number, else as text; file order when it
    is None). ``value_column`` is the target; ``covariates`` are other numeric columns kept beside
    it. Missing values (empty, NA, ...) are filled by linear interpolation within their series.
    """
    path = _check_file(path, "CSV")
    header, rows = series_lib.read_csv_rows(path)

    def index(name: str, flag: str) -> int:
        if name not in header:
            raise DataError(f"no column {name!r} ({flag}) in {path}; available: {', '.join(header)}")
        return header.index(name)

    value_i = index(value_column, "--column")
    id_i = None if id_column is None else index(id_column, "--id_column")
    time_i = None if time_column is None else index(time_column, "--time_column")
    cov_i = [index(c, "--covariates") for c in covariates]
    if value_column in covariates:
        raise ConfigError(f"the target {value_column!r} cannot also be a covariate")
    if len(rows) < 2:
        raise DataError(f"{path} has a header but no rows")
    groups: dict[str, list[tuple[str, list[float], int]]] = {}
    for line, row in rows[1:]:
        if len(row) < len(header):
            raise DataError(f"{path} line {line}: {len(row)} fields where the header has {len(header)}")
        where = f"{path} line {line}"
        key = "series" if id_i is None else row[id_i].strip()
        values = [series_lib.parse_number(row[i], f"{where}, column {header[i]}") for i in [value_i, *cov_i]]
        groups.setdefault(key, []).append((row[time_i].strip() if time_i is not None else "", values, line))
    out = []
    for key, group in groups.items():
        if time_i is not None:
            times = [g[0] for g in group]
            try:
                order = np.argsort([float(t) for t in times], kind="stable")
            except ValueError:
                order = np.argsort(np.asarray(times, dtype=object), kind="stable")
            group = [group[i] for i in order]
            sorted_times = [g[0] for g in group]
            if len(set(sorted_times)) != len(sorted_times):
                dup = next(t for t in sorted_times if sorted_times.count(t) > 1)
                raise DataError(f"{path}: series {key!r} has two rows at time {dup!r}")
        table = np.asarray([g[1] for g in group], np.float64)
        where = f"{path}, series {key}"
        target = _fill(table[:, 0], f"{where}, column {value_column}")
        cov = None
        if cov_i:
            cov = np.stack([_fill(table[:, 1 + k], f"{where}, column {c}") for k, c in enumerate(covariates)], 1)
        out.append(Series(key, target, group[0][0] or None, cov))
    return Panel(out, path, covariate_names=tuple(covariates))


# -- transforms and windows for a global model -----------------------------------------------------

SCALINGS = ("mase", "standard", "none")


class MaseScale(series_lib._Affine):
    """Divides by the training part's mean absolute one-step change (the naive forecast's error, the
    denominator of MASE), with no shift: an error of 1 in this unit is a MASE of 1, so a loss on
    scaled values weighs every series as the metric does."""

    name = "mase_scale"

    def __init__(self, season: int = 1):
        super().__init__()
        self.season = season

    def _fit(self, x_T):
        if len(x_T) < 2:
            return 0.0, 1.0
        return 0.0, series_lib.mase_scale(x_T, self.season)


PROFILES = ("all", "recent")

# Every transform a fitted chain may hold, by class name, for chain_state / chain_from_state.
_TRANSFORMS = {cls.__name__: cls for cls in (series_lib.Log, series_lib.Difference, series_lib.Deseason,
                                              series_lib.Standard, series_lib.MinMax, MaseScale)}


def chain_state(chain: series_lib.Chain) -> list[dict]:
    """A fitted chain as JSON-able records (class name and fitted attributes), for a run's files."""
    out = []
    for t in chain.transforms:
        if type(t).__name__ not in _TRANSFORMS:
            raise ConfigError(f"the transform {type(t).__name__} cannot be saved")
        state = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(t).items()}
        out.append({"class": type(t).__name__, "state": state})
    return out


def chain_from_state(records: Sequence[dict]) -> series_lib.Chain:
    """The fitted chain ``chain_state`` wrote: the same transforms with the same fitted values."""
    transforms = []
    for r in records:
        cls = _TRANSFORMS.get(r.get("class"))
        if cls is None:
            raise DataError(f"unknown transform {r.get('class')!r} in a saved chain")
        t = cls.__new__(cls)
        t.__dict__.update({k: (np.asarray(v, np.float64) if k == "means" and v is not None else v)
                           for k, v in r["state"].items()})
        transforms.append(t)
    return series_lib.Chain(transforms)


def series_transform(train_T: np.ndarray, *, log: bool, season: int = 1, deseason: bool = False,
                     scaling: str = "mase", profile: str = "all", recent_seasons: int = 6) -> series_lib.Chain:
    """The per-series chain, fitted on ``train_T``: [log] -> [deseason] -> scaling.

    ``log`` is refused (a DataError) for a series with a value <= 0. ``deseason`` removes a
    seasonal profile (additively; after ``log`` that is multiplicative), ES-RNN's seasonal
    normalisation with fixed indices: ``profile='all'``, the mean of each phase over the whole
    training part; ``'recent'``, a classical decomposition (the series minus its centred moving
    average) over its last ``recent_seasons`` seasons (see ``series.Deseason``). ``scaling``: ``mase`` (see ``MaseScale``),
    ``standard`` or ``none``. A level-normalised window does not depend on an affine scaling's
    offset, only on its scale.
    """
    if scaling not in SCALINGS:
        raise ConfigError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    steps: list[series_lib.Transform] = []
    if log:
        steps.append(series_lib.Log())
    if profile not in PROFILES:
        raise ConfigError(f"the seasonal profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if deseason and season > 1 and len(train_T) >= 2 * season:
        steps.append(series_lib.Deseason(season) if profile == "all" else
                     series_lib.Deseason(season, detrend=True, recent=recent_seasons))
    if scaling == "mase":
        steps.append(MaseScale())
    elif scaling == "standard":
        steps.append(series_lib.Standard())
    return series_lib.Chain(steps).fit(np.asarray(train_T, np.float64))


@dataclasses.dataclass
class Windows:
    """Windows drawn from many series: inputs ``x_NxLxD`` (channel 0 the target, relative to
    ``level_N``; then the covariates), targets ``y_NxH`` (relative to ``level_N``), the series each
    came from ``series_N`` and the index in its series of the first target ``end_N``."""

    x_NxLxD: np.ndarray
    y_NxH: np.ndarray
    level_N: np.ndarray
    series_N: np.ndarray
    end_N: np.ndarray

    def __len__(self) -> int:
        return len(self.x_NxLxD)


LEVELS = ("last", "mean", "none")


def _level(x_L: np.ndarray, level: str, season: int) -> float:
    if level == "last":
        return float(x_L[-1])
    if level == "mean":  # of the last season (or 1 value), robust to one noisy last value
        return float(np.mean(x_L[-max(season, 1):]))
    return 0.0


def _input(z_T: np.ndarray, cov_TxC: np.ndarray | None, end: int, input_size: int) -> np.ndarray:
    """The ``input_size`` steps before ``end``, left-padded with the first value where the series
    is shorter (a short series still gets windows: its first value repeated is a flat past)."""
    start = end - input_size
    idx = np.clip(np.arange(start, end), 0, None)
    cols = [z_T[idx][:, None]]
    if cov_TxC is not None:
        cols.append(cov_TxC[idx])
    return np.concatenate(cols, axis=1)


def make_windows(z_list: Sequence[np.ndarray], input_size: int, horizon: int, *, level: str = "last",
                 season: int = 1, covariates: Sequence[np.ndarray | None] | None = None,
                 min_input: int = 1, targets_before: Sequence[int] | None = None,
                 targets_from: Sequence[int] | None = None) -> Windows:
    """Every window of ``input_size`` inputs and the ``horizon`` values after them, from every series.

    ``z_list`` holds transformed series (``series_transform``). A window needs ``min_input`` real
    input values (fewer than ``input_size`` are left-padded) and all its targets; with
    ``targets_before[i]``, only targets before that index of series i are used (the training part
    of a split), and with ``targets_from[i]`` only windows whose last target is at or after it (the
    validation windows). The input and targets are then made relative to the window's level (see
    ``LEVELS``). ``covariates[i]`` [T, C] are appended as channels, as they are (scale them first).
    """
    if input_size < 1 or horizon < 1 or min_input < 1:
        raise ConfigError(f"input_size, horizon and min_input must be >= 1, got {input_size}, {horizon}, {min_input}")
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    xs, ys, levels, sids, ends = [], [], [], [], []
    for i, z_T in enumerate(z_list):
        z_T = np.asarray(z_T, np.float64)
        cov = None if covariates is None else covariates[i]
        stop = len(z_T) if targets_before is None else min(len(z_T), targets_before[i])
        for end in range(min_input, stop - horizon + 1):
            if targets_from is not None and end + horizon - 1 < targets_from[i]:
                continue
            x_LxD = _input(z_T, cov, end, input_size)
            lev = _level(z_T[max(0, end - input_size):end], level, season)
            x_LxD[:, 0] -= lev
            xs.append(x_LxD)
            ys.append(z_T[end:end + horizon] - lev)
            levels.append(lev)
            sids.append(i)
            ends.append(end)
    if not xs:
        raise DataError(f"no series is long enough for a window of {min_input} input values and {horizon} targets")
    return Windows(np.asarray(xs, np.float32), np.asarray(ys, np.float32), np.asarray(levels),
                   np.asarray(sids), np.asarray(ends))


def last_windows(z_list: Sequence[np.ndarray], input_size: int, *, level: str = "last", season: int = 1,
                 covariates: Sequence[np.ndarray | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The window ending at each series' last value (to forecast what follows): x [S, L, D], level [S]."""
    xs, levels = [], []
    for i, z_T in enumerate(z_list):
        z_T = np.asarray(z_T, np.float64)
        x_LxD = _input(z_T, None if covariates is None else covariates[i], len(z_T), input_size)
        lev = _level(z_T[-input_size:], level, season)
        x_LxD[:, 0] -= lev
        xs.append(x_LxD)
        levels.append(lev)
    return np.asarray(xs, np.float32), np.asarray(levels)


def scale_covariates(cov_TxC: np.ndarray, n_train: int) -> np.ndarray:
    """Each covariate standard-scaled by its mean and std over the first ``n_train`` steps."""
    cov_TxC = np.asarray(cov_TxC, np.float64)
    mean = cov_TxC[:n_train].mean(0)
    std = cov_TxC[:n_train].std(0)
    return (cov_TxC - mean) / np.where(std > 0, std, 1.0)
