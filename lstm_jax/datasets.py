"""Binary classification datasets from files: the UCR archive (``.tsv`` / ``.ts``) and ``.npz`` arrays.

``load_binary(spec, data_dir, *, seed, znorm, val_fraction)`` is the one entry point:

* ``'synthetic'``  the order-of-two-pulses task (``lstm_jax.data.synthetic_binary``); it draws its own
  validation set, so ``val_fraction`` does not apply.
* ``'ucr:NAME'``   ``DATA_DIR/NAME/NAME_TRAIN.tsv`` and ``NAME_TEST.tsv`` (UCR 2018 archive: one series a
  row, tab-separated, the label in column 0), or ``NAME_TRAIN.ts`` / ``NAME_TEST.ts`` (the sktime/aeon
  format, univariate or multivariate). The archive's test split is the test set.
* ``'npz:PATH'``   ``X`` [N, T, F] (or [N, T]), ``y`` [N] and optionally ``lengths`` [N]. A fixed
  stratified 20% of the rows is the test set (drawn with seed 0 whatever ``--seed`` is, so that runs with
  different seeds are scored on the same rows); ``val_fraction`` of the rest is the validation set.

In every case the validation split is carved out of the training data, stratified by class and drawn
with ``seed``; the test set is never used to choose anything.

Labels (numbers or strings) are mapped to {0, 1} in sorted order; ``Dataset.info['labels']`` records the
mapping. Variable-length series (NaN-padded rows of the 2018 archive, ragged ``.ts`` rows) become
zero-padded ``x`` with ``Split.lengths``; a NaN inside a series is filled by linear interpolation.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from lstm_jax import data as data_lib
from lstm_jax.data import Dataset, Split
from lstm_jax.errors import DataError

SPECS = ("synthetic", "ucr:NAME", "npz:PATH")
NPZ_TEST_FRACTION = 0.2


def load_binary(spec: str, data_dir: str | None = None, *, seed: int = 0, znorm: bool = False,
                val_fraction: float = 0.2) -> Dataset:
    """The dataset ``spec`` names, with labels in {0, 1}; see the module docstring for the specs."""
    if spec == "synthetic":
        ds = data_lib.synthetic_binary(seed=seed)
        if znorm:
            ds = Dataset(*(znormalise(s) for s in (ds.train, ds.val, ds.test)), info={**ds.info, "znorm": True})
        return ds
    kind, _, arg = spec.partition(":")
    if kind not in ("ucr", "npz") or not arg:
        raise DataError(f"unknown dataset {spec!r}; choose one of: {', '.join(SPECS)}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if kind == "ucr":
        return load_ucr(arg, data_dir, seed=seed, znorm=znorm, val_fraction=val_fraction)
    return load_npz(arg, seed=seed, znorm=znorm, val_fraction=val_fraction)


# -- UCR ------------------------------------------------------------------------------------------

def load_ucr(name: str, data_dir: str | None, *, seed: int = 0, znorm: bool = False, val_fraction: float = 0.2) -> Dataset:
    """``data_dir/name/name_{TRAIN,TEST}.{tsv,ts}`` as a binary Dataset (test = the archive's test split)."""
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
    raw = {part: read_series_file(path) for part, path in paths.items()}
    (xtr, ltr, ytr), (xte, lte, yte) = raw["TRAIN"], raw["TEST"]
    mapping = label_mapping(name, ytr, yte)
    T = max(xtr.shape[1], xte.shape[1])
    train = _split(_pad_time(xtr, T), ltr, np.array([mapping[v] for v in ytr], np.float32))
    test = _split(_pad_time(xte, T), lte, np.array([mapping[v] for v in yte], np.float32))
    if (train.lengths is None) != (test.lengths is None):  # one variable-length split: both carry lengths
        train, test = (Split(s.x, s.y, np.full(len(s), T, np.int32) if s.lengths is None else s.lengths) for s in (train, test))
    train, val = stratified_split(train, val_fraction, seed)
    if znorm:
        train, val, test = (znormalise(s) for s in (train, val, test))
    info = {
        "name": name, "source": "ucr", "files": {k.lower(): os.path.abspath(p) for k, p in paths.items()},
        "labels": {str(k): v for k, v in mapping.items()}, "length": T, "features": int(xtr.shape[2]),
        "variable_length": train.lengths is not None, "znorm": znorm, "val_fraction": val_fraction, "val_seed": seed,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "class_counts": {k: np.bincount(s.y.astype(int), minlength=2).tolist()
                         for k, s in (("train", train), ("val", val), ("test", test))},
    }
    return Dataset(train, val, test, info=info)


def read_series_file(path: str) -> tuple[np.ndarray, np.ndarray, list]:
    """A ``.tsv`` or ``.ts`` file -> (x [N, T, D] with NaN padding, lengths [N], raw labels)."""
    if not os.path.isfile(path):
        raise DataError(f"no such file: {path}")
    rows = read_ts(path) if path.endswith(".ts") else read_tsv(path)
    if not rows:
        raise DataError(f"{path} holds no series")
    return _stack(path, rows)


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


def read_ts(path: str) -> list[tuple[int, list[np.ndarray], object]]:
    """The sktime/aeon ``.ts`` format: @-headers, then ``@data`` rows ``dim1:dim2:...:label``.

    Values are comma-separated; '?' (and NaN) mark missing values. Timestamped files are refused.
    """
    rows, in_data, has_labels = [], False, None
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                key, _, value = line.partition(" ")
                key = key.lower()
                if key == "@data":
                    in_data = True
                    if has_labels is False:
                        raise DataError(f"{path}: '@classLabel false'; a classification file needs class labels")
                elif key == "@classlabel":
                    has_labels = value.split()[:1] == ["true"]
                elif key == "@timestamps" and value.strip().lower() == "true":
                    raise DataError(f"{path}: timestamped .ts files are not supported")
                elif not key.startswith("@"):
                    raise DataError(f"{path}, line {n}: data before '@data'")
                continue
            *dims, label = line.split(":")
            if not dims:
                raise DataError(f"{path}, line {n}: expected 'values:label', got {line[:40]!r}")
            series = [_parse_floats(d.replace("?", "nan").split(","), path, n) for d in dims]
            rows.append((n, series, _label(label)))
    if not in_data:
        raise DataError(f"{path}: no '@data' section; is it a .ts file?")
    return rows


def _stack(path: str, rows) -> tuple[np.ndarray, np.ndarray, list]:
    """Rows of per-dimension value arrays -> x [N, T, D] (NaN past each length), lengths [N], labels."""
    D = len(rows[0][1])
    T = max(len(v) for _, dims, _ in rows for v in dims)
    x = np.full((len(rows), T, D), np.nan)
    lengths = np.zeros(len(rows), np.int32)
    for i, (n, dims, _) in enumerate(rows):
        if len(dims) != D:
            raise DataError(f"{path}, line {n}: {len(dims)} dimensions, but the first series has {D}")
        for d, v in enumerate(dims):
            x[i, : len(v), d] = v
        finite = np.isfinite(x[i]).any(axis=1)
        if not finite.any():
            raise DataError(f"{path}, line {n}: the series has no values")
        L = int(np.nonzero(finite)[0][-1]) + 1  # trailing NaNs are padding
        lengths[i] = L
        x[i, :L] = _interpolate(x[i, :L])
    return x, lengths, [label for _, _, label in rows]


def _interpolate(x_TxD: np.ndarray) -> np.ndarray:
    """Fills NaNs inside a series linearly (ends: the nearest value), per dimension."""
    out = x_TxD.copy()
    t = np.arange(len(out))
    for d in range(out.shape[1]):
        ok = np.isfinite(out[:, d])
        if not ok.all():
            out[:, d] = np.interp(t, t[ok], out[ok, d]) if ok.any() else 0.0
    return out


def _pad_time(x: np.ndarray, T: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, T - x.shape[1]), (0, 0)), constant_values=np.nan) if x.shape[1] < T else x


def _split(x_NxTxD: np.ndarray, lengths_N: np.ndarray, y_N: np.ndarray) -> Split:
    """NaN padding -> zeros; ``lengths`` only when some series is shorter than T."""
    T = x_NxTxD.shape[1]
    x = np.nan_to_num(x_NxTxD, nan=0.0).astype(np.float32)
    return Split(x, y_N, None if np.all(lengths_N == T) else lengths_N.astype(np.int32))


def label_mapping(name: str, *label_lists: Sequence) -> dict:
    """The two distinct labels in sorted order -> 0, 1; anything but two classes is a DataError."""
    seen = set().union(*map(set, label_lists))
    numeric = all(not isinstance(v, str) for v in seen)
    classes = sorted(seen) if numeric else sorted(seen, key=str)
    if len(classes) != 2:
        shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
        raise DataError(f"{name} has {len(classes)} class{'es' if len(classes) != 1 else ''} ({shown}); "
                        f"a binary task needs exactly 2")
    if len(set(label_lists[0])) < 2:
        raise DataError(f"{name}: the training data holds only class {label_lists[0][0]}; both classes are needed")
    return {c: k for k, c in enumerate(classes)}


# -- npz ------------------------------------------------------------------------------------------

def load_npz(path: str, *, seed: int = 0, znorm: bool = False, val_fraction: float = 0.2) -> Dataset:
    """``X`` [N, T, F] or [N, T], ``y`` [N], optional ``lengths`` [N] -> train / val / test (see module doc)."""
    if not os.path.isfile(path):
        raise DataError(f"no such file: {path}")
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as e:  # a corrupt or non-npz file: zipfile, pickle or value errors
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
    with arrays:
        missing = [k for k in ("X", "y") if k not in arrays.files]
        if missing:
            raise DataError(f"{path} lacks array {' and '.join(map(repr, missing))} (it has: {', '.join(arrays.files)})")
        x, y = np.asarray(arrays["X"]), np.asarray(arrays["y"])
        lengths = np.asarray(arrays["lengths"]) if "lengths" in arrays.files else None
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: X must be [N, T, F] and y [N], got {x.shape} and {y.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: X must be numeric, got dtype {x.dtype}")
    N, T, _ = x.shape
    if lengths is not None:
        lengths = lengths.astype(np.int64)
        if lengths.shape != (N,) or lengths.min() < 1 or lengths.max() > T:
            raise DataError(f"{path}: lengths must be [N] with values in [1, {T}]")
        past = np.arange(T)[None, :] >= lengths[:, None]
        x = np.where(past[:, :, None], np.nan, x.astype(np.float64))
    labels = [_label(str(v)) for v in y.tolist()]
    name = os.path.basename(path)
    mapping = label_mapping(name, labels)
    x, lens, _ = _stack(path, [(i + 1, list(row.T), None) for i, row in enumerate(x.astype(np.float64))])
    full = _split(x, lens, np.array([mapping[v] for v in labels], np.float32))
    train, test = stratified_split(full, NPZ_TEST_FRACTION, 0)
    train, val = stratified_split(train, val_fraction, seed)
    if znorm:
        train, val, test = (znormalise(s) for s in (train, val, test))
    info = {
        "name": name, "source": "npz", "files": {"data": os.path.abspath(path)},
        "labels": {str(k): v for k, v in mapping.items()}, "length": T, "features": int(x.shape[2]),
        "variable_length": full.lengths is not None, "znorm": znorm, "val_fraction": val_fraction, "val_seed": seed,
        "test_fraction": NPZ_TEST_FRACTION, "test_seed": 0,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
    }
    return Dataset(train, val, test, info=info)


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
