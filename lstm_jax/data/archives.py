"""Classification datasets from files: the UCR and UEA archives (``.tsv`` / ``.ts``) and ``.npz`` arrays.

``load_classification(spec, data_dir, *, seed, znorm, val_fraction, missing)`` is the entry point for
any number of classes K; ``load_binary`` is the same with K = 2 required (the binary front-end's).

* ``'synthetic'``  the order-of-two-pulses task (``lstm_jax.data.synthetic.synthetic_binary``); it draws its own
  validation set, so ``val_fraction`` does not apply.
* ``'ucr:NAME'``   ``DATA_DIR/NAME/NAME_TRAIN.tsv`` and ``NAME_TEST.tsv`` (UCR 2018 archive: one series a
  row, tab-separated, the label in column 0, shorter series padded with NaN at the end), or
  ``NAME_TRAIN.ts`` / ``NAME_TEST.ts`` (the sktime/aeon format of the UCR and UEA archives: univariate
  or multivariate, channels separated by ':', equal or varying length, numeric or word labels). The
  archive's test split is the test set.
* ``'npz:PATH'``   ``X`` [N, T, F] (or [N, T]), ``y`` [N] and optionally ``lengths`` [N]. A fixed
  stratified 20% of the rows is the test set (drawn with seed 0 whatever ``--seed`` is, so that runs with
  different seeds are scored on the same rows); ``val_fraction`` of the rest is the validation set.

In every case the validation split is carved out of the training data, stratified by class and drawn
with ``seed``; the test set is never used to choose anything.

Labels. The classes are the distinct training labels, sorted (numerically when every label is a
number, else as strings), and numbered 0..K-1; ``Dataset.info['labels']`` maps each original label
(as a string) to its index, and ``y`` holds the indices as float32. A training set with one class,
or a test label that never occurs in the training data, is a ``DataError`` (a model cannot score a
class it was never shown; drop those rows or relabel them).

Lengths. Varying-length series (NaN-padded rows of the 2018 archive, ragged ``.ts`` rows) become
zero-padded ``x`` with ``Split.lengths``; the models read ``lengths`` and never see the padding.

Missing values inside a series (NaN in ``.tsv``, '?' or NaN in ``.ts``, NaN in ``.npz`` before a row's
length) are filled by linear interpolation (``lstm_jax.data.series.interpolate_missing``) with one
``MissingValuesWarning`` per file that counts them (``info['missing_values']``), or refused with
``missing='error'``. A channel with fewer than two values to interpolate between, and a series with
no values at all, are ``DataError``s.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np

from lstm_jax.data import synthetic
from lstm_jax.data.dataset import Dataset, Split
from lstm_jax.data.series import interpolate_missing
from lstm_jax.errors import DataError, MissingValuesWarning

SPECS = ("synthetic", "ucr:NAME", "npz:PATH")
MISSING = ("interpolate", "error")
NPZ_TEST_FRACTION = 0.2


def load_classification(spec: str, data_dir: str | None = None, *, seed: int = 0, znorm: bool = False,
                        val_fraction: float = 0.2, missing: str = "interpolate") -> Dataset:
    """The dataset ``spec`` names, with labels 0..K-1 (K >= 2); see the module docstring for the specs."""
    if missing not in MISSING:
        raise DataError(f"missing must be one of {', '.join(MISSING)}, got {missing!r}")
    if spec == "synthetic":
        ds = synthetic.synthetic_binary(seed=seed)
        splits, info = (ds.train, ds.val, ds.test), {**ds.info, "labels": {"0": 0, "1": 1}, "num_classes": 2}
        if znorm:
            splits, info = tuple(znormalise(s) for s in splits), {**info, "znorm": True}
        return Dataset(*splits, info=info)
    kind, _, arg = spec.partition(":")
    if kind not in ("ucr", "npz") or not arg:
        raise DataError(f"unknown dataset {spec!r}; choose one of: {', '.join(SPECS)}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if kind == "ucr":
        return load_ucr(arg, data_dir, seed=seed, znorm=znorm, val_fraction=val_fraction, missing=missing)
    return load_npz(arg, seed=seed, znorm=znorm, val_fraction=val_fraction, missing=missing)


def load_binary(spec: str, data_dir: str | None = None, *, seed: int = 0, znorm: bool = False,
                val_fraction: float = 0.2, missing: str = "interpolate") -> Dataset:
    """``load_classification`` for a two-class dataset (labels {0, 1}); more classes are a DataError."""
    ds = load_classification(spec, data_dir, seed=seed, znorm=znorm, val_fraction=val_fraction, missing=missing)
    K = ds.info.get("num_classes", 2)
    if K != 2:
        classes = list(ds.info["labels"])
        shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        raise DataError(f"{ds.info.get('name', spec)} has {K} classes ({shown}); a binary task needs exactly 2: "
                        f"use python -m experiments.classify for {K} classes")
    return ds


# -- UCR / UEA ------------------------------------------------------------------------------------

def load_ucr(name: str, data_dir: str | None, *, seed: int = 0, znorm: bool = False, val_fraction: float = 0.2,
             missing: str = "interpolate") -> Dataset:
    """``data_dir/name/name_{TRAIN,TEST}.{tsv,ts}`` as a K-class Dataset (test = the archive's test split)."""
    if not data_dir:
        raise DataError(f"--dataset=ucr:{name} needs --data_dir, the folder that holds {name}/{name}_TRAIN.tsv")
    folder = os.path.join(data_dir, name)
    paths = {}
    for part in ("TRAIN", "TEST"):
        candidates = [os.path.join(folder, f"{name}_{part}.{ext}") for ext in ("tsv", "ts")]
        found = [p for p in candidates if os.path.isfile(p)]
        if not found:
            raise DataError(f"no such file: {candidates[0]} (nor {os.path.basename(candidates[1])})")
        paths[part] = found[0]
    raw = {part: read_series_file(path, missing=missing) for part, path in paths.items()}
    (xtr, ltr, ytr, mtr), (xte, lte, yte, mte) = raw["TRAIN"], raw["TEST"]
    if xtr.shape[2] != xte.shape[2]:
        raise DataError(f"{name}: the training series have {xtr.shape[2]} channels, the test series {xte.shape[2]}")
    mapping = label_mapping(name, ytr, yte)
    T = max(xtr.shape[1], xte.shape[1])
    train = as_split(pad_time(xtr, T), ltr, np.array([mapping[v] for v in ytr], np.float32))
    test = as_split(pad_time(xte, T), lte, np.array([mapping[v] for v in yte], np.float32))
    if (train.lengths is None) != (test.lengths is None):  # one variable-length split: both carry lengths
        train, test = (Split(s.x, s.y, np.full(len(s), T, np.int32) if s.lengths is None else s.lengths) for s in (train, test))
    train, val = stratified_split(train, val_fraction, seed)
    if znorm:
        train, val, test = (znormalise(s) for s in (train, val, test))
    K = len(mapping)
    lengths = np.concatenate([ltr, lte])
    info = {
        "name": name, "source": "ucr", "files": {k.lower(): os.path.abspath(p) for k, p in paths.items()},
        "labels": {str(k): v for k, v in mapping.items()}, "num_classes": K, "length": T,
        "features": int(xtr.shape[2]), "variable_length": train.lengths is not None,
        "length_range": [int(lengths.min()), int(lengths.max())],
        "missing_values": {"train": mtr, "test": mte, "handling": missing},
        "znorm": znorm, "val_fraction": val_fraction, "val_seed": seed,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "class_counts": {k: np.bincount(s.y.astype(int), minlength=K).tolist()
                         for k, s in (("train", train), ("val", val), ("test", test))},
    }
    return Dataset(train, val, test, info=info)


def read_series_file(path: str, *, missing: str = "interpolate", labelled: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, list, int]:
    """A ``.tsv`` or ``.ts`` file -> (x [N, T, D] with NaN padding, lengths [N], raw labels, missing count).

    Values missing inside a series are interpolated (one ``MissingValuesWarning`` counts them) or,
    with ``missing='error'``, refused. With ``labelled=False`` a ``.ts`` file may say
    ``@classLabel false`` (series to classify); its labels are then None.
    """
    if not os.path.isfile(path):
        raise DataError(f"no such file: {path}")
    rows = read_ts(path, labelled=labelled) if path.endswith(".ts") else read_tsv(path)
    if not rows:
        raise DataError(f"{path} holds no series")
    return _stack(path, rows, missing=missing)


def _parse_floats(tokens: Sequence[str], path: str, line: int) -> np.ndarray:
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        for j, tok in enumerate(tokens):
            try:
                float(tok)
            except ValueError:
                raise DataError(f"{path}, line {line}: non-numeric value {tok.strip()!r} (field {j + 1})") from None
        raise


def _label(tok: str):
    """'1', '1.0', '-1' -> an int; anything else stays a string (.ts labels may be words)."""
    tok = tok.strip()
    try:
        v = float(tok)
    except ValueError:
        return tok
    return int(v) if v.is_integer() else v


def read_tsv(path: str) -> list[tuple[int, list[np.ndarray], object]]:
    """UCR 2018 rows: label, then the values, tab-separated (commas accepted, as in older releases)."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            tokens = line.split("\t") if "\t" in line else line.split(",")
            if len(tokens) < 2:
                raise DataError(f"{path}, line {n}: a label and at least one value expected, got {line[:40]!r}")
            label = _label(tokens[0])
            if isinstance(label, str):
                raise DataError(f"{path}, line {n}: non-numeric label {tokens[0].strip()!r} (field 1)")
            rows.append((n, [_parse_floats(tokens[1:], path, n)], label))
    return rows


def _header_bool(path: str, n: int, key: str, value: str) -> bool:
    word = value.split()[:1]
    if word not in (["true"], ["false"]):
        raise DataError(f"{path}, line {n}: {key} must be true or false, got {value.strip()!r}")
    return word == ["true"]


def _header_int(path: str, n: int, key: str, value: str) -> int:
    try:
        v = int(value.strip())
    except ValueError:
        raise DataError(f"{path}, line {n}: {key} must be a positive integer, got {value.strip()!r}") from None
    if v < 1:
        raise DataError(f"{path}, line {n}: {key} must be a positive integer, got {v}")
    return v


def read_ts(path: str, *, labelled: bool = True) -> list[tuple[int, list[np.ndarray], object]]:
    """The sktime/aeon ``.ts`` format: @-headers, then ``@data`` rows ``dim1:dim2:...:label``.

    Values are comma-separated; '?' (and NaN) mark missing values. Every row is checked against the
    header: ``@dimensions`` (or ``@univariate true``: one channel), ``@seriesLength`` when
    ``@equalLength true``, and the ``@classLabel true L1 L2 ...`` list. Timestamped files are refused.
    """
    rows, in_data = [], False
    head: dict = {}
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                key, _, value = line.partition(" ")
                low = key.lower()
                if low == "@data":
                    in_data = True
                    if head.get("classlabel") is False and labelled:
                        raise DataError(f"{path}: '@classLabel false'; a classification file needs class labels")
                elif low == "@classlabel":
                    has = _header_bool(path, n, key, value)
                    head["classlabel"] = has
                    if has:
                        head["labels"] = [_label(t) for t in value.split()[1:]]
                elif low == "@timestamps" and _header_bool(path, n, key, value):
                    raise DataError(f"{path}: timestamped .ts files are not supported")
                elif low in ("@univariate", "@equallength"):
                    head[low[1:]] = _header_bool(path, n, key, value)
                elif low in ("@dimensions", "@serieslength"):
                    head[low[1:]] = _header_int(path, n, key, value)
                elif not low.startswith("@"):
                    raise DataError(f"{path}, line {n}: data before '@data'")
                continue
            if head.get("classlabel") is False:  # no label field: every field is a channel
                dims, label = line.split(":"), None
            else:
                *dims, label = line.split(":")
                if not dims:
                    raise DataError(f"{path}, line {n}: expected 'values:label', got {line[:40]!r}")
                label = _label(label)
            series = [_parse_floats(d.replace("?", "nan").split(","), path, n) for d in dims]
            _check_row(path, n, head, series, label)
            rows.append((n, series, label))
    if not in_data:
        raise DataError(f"{path}: no '@data' section; is it a .ts file?")
    return rows


def _check_row(path: str, n: int, head: dict, series: list[np.ndarray], label) -> None:
    """A ``.ts`` row against its file's header; any disagreement is a DataError naming the line."""
    want = head.get("dimensions", 1 if head.get("univariate") else None)
    if want is not None and len(series) != want:
        said = f"@dimensions {want}" if "dimensions" in head else "@univariate true"
        raise DataError(f"{path}, line {n}: {len(series)} channels, but the header says {said}")
    if head.get("equallength") and "serieslength" in head:
        bad = [len(v) for v in series if len(v) != head["serieslength"]]
        if bad:
            raise DataError(f"{path}, line {n}: a channel of {bad[0]} values, but the header says "
                            f"@equalLength true, @seriesLength {head['serieslength']}")
    if head.get("labels") and label not in head["labels"]:
        shown = " ".join(map(str, head["labels"][:20]))
        raise DataError(f"{path}, line {n}: label {str(label)!r} is not in the header's @classLabel list ({shown})")


def _stack(path: str, rows, *, missing: str = "interpolate") -> tuple[np.ndarray, np.ndarray, list, int]:
    """Rows of per-channel value arrays -> x [N, T, D] (NaN past each length), lengths [N], labels, and
    the number of values missing inside the series (interpolated, or a DataError with ``missing='error'``)."""
    D = len(rows[0][1])
    T = max(len(v) for _, dims, _ in rows for v in dims)
    x = np.full((len(rows), T, D), np.nan)
    lengths = np.zeros(len(rows), np.int32)
    filled, rows_filled = 0, 0
    for i, (n, dims, _) in enumerate(rows):
        if len(dims) != D:
            raise DataError(f"{path}, line {n}: {len(dims)} channels, but the first series has {D}")
        for d, v in enumerate(dims):
            x[i, : len(v), d] = v
        finite = np.isfinite(x[i]).any(axis=1)
        if not finite.any():
            raise DataError(f"{path}, line {n}: the series has no values")
        L = int(np.nonzero(finite)[0][-1]) + 1  # trailing NaNs (in every channel) are padding
        lengths[i] = L
        gaps = ~np.isfinite(x[i, :L])
        if gaps.any():
            if missing == "error":
                raise DataError(f"{path}, line {n}: {int(gaps.sum())} missing value{'s' if gaps.sum() > 1 else ''} "
                                f"inside the series (missing='error'; 'interpolate' fills them linearly)")
            for d in np.nonzero(gaps.any(axis=0))[0]:
                x[i, :L, d] = interpolate_missing(x[i, :L, d], where=f"{path}, line {n}, channel {d + 1}")
            filled, rows_filled = filled + int(gaps.sum()), rows_filled + 1
    if filled:
        warnings.warn(f"{path}: {filled} missing value{'s' if filled > 1 else ''} inside {rows_filled} "
                      f"series filled by linear interpolation", MissingValuesWarning, stacklevel=3)
    return x, lengths, [label for _, _, label in rows], filled


def pad_time(x: np.ndarray, T: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, T - x.shape[1]), (0, 0)), constant_values=np.nan) if x.shape[1] < T else x


def as_split(x_NxTxD: np.ndarray, lengths_N: np.ndarray, y_N: np.ndarray) -> Split:
    """NaN padding -> zeros; ``lengths`` only when some series is shorter than T."""
    T = x_NxTxD.shape[1]
    x = np.nan_to_num(x_NxTxD, nan=0.0).astype(np.float32)
    return Split(x, y_N, None if np.all(lengths_N == T) else lengths_N.astype(np.int32))


def _sorted_classes(labels) -> list:
    numeric = all(not isinstance(v, str) for v in labels)
    return sorted(labels) if numeric else sorted(labels, key=str)


def _shown(values, limit: int = 10) -> str:
    values = list(values)
    return ", ".join(map(str, values[:limit])) + (", ..." if len(values) > limit else "")


def label_mapping(name: str, train_labels: Sequence, *other_labels: Sequence) -> dict:
    """The distinct training labels in sorted order -> 0..K-1.

    A DataError when the training labels hold fewer than two classes, or when ``other_labels`` (the
    test labels) hold a label the training data never shows.
    """
    classes = _sorted_classes(set(train_labels))
    if len(classes) < 2:
        what = f"only class {classes[0]}" if classes else "no labels"
        raise DataError(f"{name}: the training data holds {what}; classification needs at least 2 classes")
    unseen = _sorted_classes(set().union(*map(set, other_labels)) - set(classes)) if other_labels else []
    if unseen:
        count = sum(v in set(unseen) for labels in other_labels for v in labels)
        raise DataError(f"{name}: test label{'s' if len(unseen) > 1 else ''} {_shown(unseen)} ({count} row"
                        f"{'s' if count > 1 else ''}) never occur{'s' if len(unseen) == 1 else ''} in the training "
                        f"data ({len(classes)} classes: {_shown(classes)}); drop or relabel those rows")
    return {c: k for k, c in enumerate(classes)}


# -- npz ------------------------------------------------------------------------------------------

def load_npz(path: str, *, seed: int = 0, znorm: bool = False, val_fraction: float = 0.2,
             missing: str = "interpolate") -> Dataset:
    """``X`` [N, T, F] or [N, T], ``y`` [N] (any labels, e.g. integers 0..K-1), optional ``lengths`` [N]
    -> train / val / test (see the module docstring)."""
    x, lens, labels, filled = read_npz(path, missing=missing)
    N, T, _ = x.shape
    name = os.path.basename(path)
    mapping = label_mapping(name, labels)
    full = as_split(x, lens, np.array([mapping[v] for v in labels], np.float32))
    train, test = stratified_split(full, NPZ_TEST_FRACTION, 0)
    train, val = stratified_split(train, val_fraction, seed)
    if znorm:
        train, val, test = (znormalise(s) for s in (train, val, test))
    K = len(mapping)
    info = {
        "name": name, "source": "npz", "files": {"data": os.path.abspath(path)},
        "labels": {str(k): v for k, v in mapping.items()}, "num_classes": K, "length": T,
        "features": int(x.shape[2]), "variable_length": full.lengths is not None,
        "missing_values": {"all": filled, "handling": missing},
        "znorm": znorm, "val_fraction": val_fraction, "val_seed": seed,
        "test_fraction": NPZ_TEST_FRACTION, "test_seed": 0,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "class_counts": {k: np.bincount(s.y.astype(int), minlength=K).tolist()
                         for k, s in (("train", train), ("val", val), ("test", test))},
    }
    return Dataset(train, val, test, info=info)


def read_npz(path: str, *, missing: str = "interpolate", labelled: bool = True
             ) -> tuple[np.ndarray, np.ndarray, list | None, int]:
    """An ``.npz`` of ``X`` [N, T, F] or [N, T], ``y`` [N] and optional ``lengths`` [N] -> (x [N, T, D]
    with NaN past each length, lengths [N], labels (None when ``labelled=False`` and there is no
    ``y``), missing count), as ``read_series_file``."""
    if not os.path.isfile(path):
        raise DataError(f"no such file: {path}")
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as e:  # a corrupt or non-npz file: zipfile, pickle or value errors
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
    with arrays:
        missing_arrays = [k for k in (("X", "y") if labelled else ("X",)) if k not in arrays.files]
        if missing_arrays:
            raise DataError(f"{path} lacks array {' and '.join(map(repr, missing_arrays))} (it has: {', '.join(arrays.files)})")
        x = np.asarray(arrays["X"])
        y = np.asarray(arrays["y"]) if "y" in arrays.files else None
        lengths = np.asarray(arrays["lengths"]) if "lengths" in arrays.files else None
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or (y is not None and (y.ndim != 1 or len(x) != len(y))):
        raise DataError(f"{path}: X must be [N, T, F] and y [N], got {x.shape} and {None if y is None else y.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: X must be numeric, got dtype {x.dtype}")
    if len(x) == 0 or x.shape[1] == 0:
        raise DataError(f"{path} holds no series (X has shape {x.shape})")
    N, T, _ = x.shape
    if lengths is not None:
        lengths = lengths.astype(np.int64)
        if lengths.shape != (N,) or lengths.min() < 1 or lengths.max() > T:
            raise DataError(f"{path}: lengths must be [N] with values in [1, {T}]")
        past = np.arange(T)[None, :] >= lengths[:, None]
        x = np.where(past[:, :, None], np.nan, x.astype(np.float64))
    labels = None if y is None else [_label(str(v)) for v in y.tolist()]
    x, lens, _, filled = _stack(path, [(i + 1, list(row.T), None) for i, row in enumerate(x.astype(np.float64))],
                                missing=missing)
    return x, lens, labels, filled


def read_inputs(path: str, *, missing: str = "interpolate", labelled: bool = False
                ) -> tuple[np.ndarray, np.ndarray, list | None, int]:
    """Series to classify from a ``.ts``, ``.tsv`` or ``.npz`` file -> (x [N, T, D] with NaN past each
    length, lengths [N], labels or None, missing count). Labels are optional unless ``labelled``."""
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder; give a .ts, .tsv or .npz file")
    if path.endswith(".npz"):
        return read_npz(path, missing=missing, labelled=labelled)
    if not path.endswith((".ts", ".tsv", ".txt")):
        raise DataError(f"{path}: unknown file type; series to classify come as .ts, .tsv or .npz")
    x, lengths, labels, filled = read_series_file(path, missing=missing, labelled=labelled)
    return x, lengths, (None if all(v is None for v in labels) else labels), filled


# -- transforms -----------------------------------------------------------------------------------

def take(split: Split, idx: np.ndarray) -> Split:
    return Split(split.x[idx], split.y[idx], None if split.lengths is None else split.lengths[idx])


def stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(rest, held out): about ``fraction`` of each class held out, at least one row of a class that
    has two or more, and never all of a class. Rows keep their order within each part."""
    rng = np.random.default_rng(seed)
    y = split.y.astype(int)
    held = []
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1), len(idx) - 1) if len(idx) > 1 else 0
        held.extend(rng.permutation(idx)[:k].tolist())
    if not held:
        raise DataError(f"{len(split)} rows are too few to hold out a validation set")
    mask = np.zeros(len(y), bool)
    mask[held] = True
    return take(split, np.nonzero(~mask)[0]), take(split, np.nonzero(mask)[0])


def znormalise(split: Split) -> Split:
    """Each series, each channel, to mean 0 and std 1 over its valid steps (a constant one to 0)."""
    x = split.x.astype(np.float64)
    N, T, _ = x.shape
    lengths = np.full(N, T) if split.lengths is None else split.lengths
    valid_NxTx1 = (np.arange(T)[None, :] < lengths[:, None])[:, :, None]
    n = lengths[:, None, None].astype(np.float64)
    mean = np.where(valid_NxTx1, x, 0.0).sum(1, keepdims=True) / n
    var = np.where(valid_NxTx1, (x - mean) ** 2, 0.0).sum(1, keepdims=True) / n
    std = np.sqrt(var)
    z = (x - mean) / np.where(std > 1e-8, std, 1.0)
    return Split(np.where(valid_NxTx1, z, 0.0).astype(np.float32), split.y, split.lengths)



def channel_statistics(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's mean and std [D] over every valid step of every row of ``split``."""
    x = split.x.astype(np.float64)
    N, T, D = x.shape
    lengths = np.full(N, T) if split.lengths is None else split.lengths
    valid = (np.arange(T)[None, :] < lengths[:, None]).reshape(-1)
    v = x.reshape(-1, D)[valid]
    return v.mean(axis=0), v.std(axis=0)


def standardise_channels(ds: Dataset) -> Dataset:
    """Every split scaled per channel with the *training* split's mean and std (a constant channel is
    only centred); padding stays zero. Unlike ``znormalise`` (each series on its own), this keeps how
    the level and scale of a channel differ between series, which is often the signal in multivariate
    sets (JapaneseVowels' cepstral levels tell the speakers apart)."""
    mean, std = channel_statistics(ds.train)
    apply = lambda split: None if split is None else scale_channels(split, mean, std)  # noqa: E731
    info = {**ds.info, "channel_standardisation": {"mean": mean.tolist(), "std": std.tolist()}}
    return Dataset(apply(ds.train), apply(ds.val), apply(ds.test), info=info)


def scale_channels(split: Split, mean: np.ndarray, std: np.ndarray) -> Split:
    """Each channel of ``split`` as (x - mean) / std with given [D] statistics (a std of ~0 only
    centres); padding stays zero."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    scale = np.where(std > 1e-8, std, 1.0)
    N, T, _ = split.x.shape
    lengths = np.full(N, T) if split.lengths is None else split.lengths
    valid = (np.arange(T)[None, :] < lengths[:, None])[:, :, None]
    z = np.where(valid, (split.x.astype(np.float64) - mean) / scale, 0.0).astype(np.float32)
    return Split(z, split.y, split.lengths)

# -- published baselines -------------------------------------------------------------------------

def find_baselines_file(data_dir: str) -> str | None:
    """``BASELINES.md`` in ``data_dir`` or in its parent folder, if there is one."""
    for folder in (data_dir, os.path.dirname(os.path.abspath(data_dir))):
        path = os.path.join(folder, "BASELINES.md")
        if os.path.isfile(path):
            return path
    return None


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in ``text`` as {header: cell} dicts."""
    rows, header = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            if header is not None:
                break  # the first table has ended
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
        elif all(set(c) <= set("-: ") for c in cells):
            continue  # the |---|---| separator
        else:
            rows.append(dict(zip(header, cells)))
    return rows


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None  # '–', 'n/a', empty: no published figure


def read_baselines(data_dir: str | None, name: str) -> dict[str, float | None] | None:
    """Published test accuracies for dataset ``name`` from the BASELINES.md beside ``data_dir``.

    Returns {method: accuracy or None}, or None when there is no such file or no row for ``name``.
    """
    path = find_baselines_file(data_dir) if data_dir else None
    if path is None:
        return None
    with open(path) as f:
        rows = parse_markdown_table(f.read())
    for row in rows:
        first = next(iter(row))
        if row[first] == name:
            return {k: _number(v) for k, v in row.items() if k != first}
    return None
