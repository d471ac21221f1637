"""File datasets (UCR .tsv/.ts, .npz), classification metrics, LSTM-FCN, and the binary front-end on them.

Every file here is written to tmp_path with made-up numbers; only the last test reads a real UCR set,
from ../shared/data, and skips when it is absent.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from harness import run_front_end

from lstm_jax import metrics as M
from lstm_jax.data import archives
from lstm_jax.errors import ConfigError, DataError
from lstm_jax.nn.models import LSTMFCN, Classifier, ModelConfig, make_classifier


def write_tsv(path: pathlib.Path, rows) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(str(v) for v in row) + "\n" for row in rows))
    return path


def make_ucr(root: pathlib.Path, name: str, train_rows, test_rows) -> pathlib.Path:
    write_tsv(root / name / f"{name}_TRAIN.tsv", train_rows)
    write_tsv(root / name / f"{name}_TEST.tsv", test_rows)
    return root


def toy_rows(n: int, labels=(-1, 1), length: int = 6, seed: int = 0):
    """n rows alternating between the two labels: an id (1000 + row) then a rising or falling ramp."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ramp = np.linspace(0, 1, length - 1) * (1 if i % 2 else -1)
        rows.append([labels[i % 2], 1000 + i, *np.round(ramp + 0.01 * rng.random(length - 1), 6).tolist()])
    return rows


def ids(split) -> list[int]:
    return np.rint(split.x[:, 0, 0]).astype(int).tolist()


# -- loaders --------------------------------------------------------------------------------------

def test_tsv_labels_mapped_in_sorted_order(tmp_path):
    make_ucr(tmp_path, "Toy", toy_rows(20, labels=(2, 1)), toy_rows(8, labels=(2, 1), seed=1))
    ds = archives.load_binary("ucr:Toy", str(tmp_path), seed=0, val_fraction=0.25)
    assert ds.info["labels"] == {"1": 0, "2": 1}
    assert set(np.unique(ds.train.y)) == {0.0, 1.0}
    assert ds.train.x.shape[1:] == (6, 1) and len(ds.test) == 8
    assert len(ds.train) + len(ds.val) == 20
    # Row 0 of the test file has label 2 -> class 1 and its values unchanged (no znorm).
    first = toy_rows(8, labels=(2, 1), seed=1)[0]
    assert ds.test.y[0] == 1.0
    np.testing.assert_allclose(ds.test.x[0, :, 0], first[1:], rtol=1e-6)


def test_nan_padded_rows_get_lengths(tmp_path):
    rows = toy_rows(6, length=5)
    rows[1][4:] = ["NaN", "NaN"]  # length 3 (id, then two values)
    rows[2][5:] = ["NaN"]         # length 4
    rows[3][3] = "NaN"            # an inner gap: interpolated, length stays 5
    make_ucr(tmp_path, "Var", rows, toy_rows(4, length=5))
    with pytest.warns(archives.MissingValuesWarning, match=r"Var_TRAIN.tsv: 1 missing value inside 1 series"):
        ds = archives.load_ucr("Var", str(tmp_path), val_fraction=0.34, seed=0)
    assert ds.info["missing_values"] == {"train": 1, "test": 0, "handling": "interpolate"}
    by_id = {i: (x, L) for s in (ds.train, ds.val) for i, x, L in zip(ids(s), s.x, s.lengths)}
    x1, L1 = by_id[1001]
    assert L1 == 3 and np.all(x1[3:] == 0)
    assert by_id[1002][1] == 4 and by_id[1000][1] == 5
    x3, L3 = by_id[1003]
    assert L3 == 5 and x3[2, 0] == pytest.approx((rows[3][2] + rows[3][4]) / 2, rel=1e-5)
    assert ds.test.lengths is not None and np.all(ds.test.lengths == 5)
    assert ds.info["variable_length"]


def test_ts_univariate_and_multivariate(tmp_path):
    folder = tmp_path / "Ts"
    folder.mkdir()
    head = "# made up\n@problemName Ts\n@timeStamps false\n@univariate {u}\n@classLabel true up down\n@data\n"
    uni = head.format(u="true") + "1,2,3,4:up\n4,3,2,1:down\n1,2,3,?:up\n9,8,7:down\n"
    (folder / "Ts_TRAIN.ts").write_text(uni)
    (folder / "Ts_TEST.ts").write_text(uni)
    ds = archives.load_ucr("Ts", str(tmp_path), val_fraction=0.5, seed=0)
    assert ds.info["labels"] == {"down": 0, "up": 1}
    assert ds.test.x.shape == (4, 4, 1)
    np.testing.assert_array_equal(ds.test.lengths, [4, 4, 3, 3])  # a trailing '?' is padding
    np.testing.assert_array_equal(ds.test.y, [1, 0, 1, 0])

    multi = head.format(u="false") + "1,2,3:4,5,6:up\n3,2,1:6,5,4:down\n0,1,2:3,4,5:up\n2,1,0:5,4,3:down\n"
    (folder / "Ts_TRAIN.ts").write_text(multi)
    (folder / "Ts_TEST.ts").write_text(multi)
    ds = archives.load_ucr("Ts", str(tmp_path), val_fraction=0.5, seed=0)
    assert ds.test.x.shape == (4, 3, 2) and ds.test.lengths is None
    np.testing.assert_array_equal(ds.test.x[0], [[1, 4], [2, 5], [3, 6]])


def test_znorm_over_valid_steps(tmp_path):
    rows = [[1, 1, 2, 3, 4], [2, 10, 30, "NaN", "NaN"], [1, 5, 5, 5, 5], [2, 0, 2, 4, 9]] * 2
    make_ucr(tmp_path, "Z", rows, rows)
    ds = archives.load_ucr("Z", str(tmp_path), znorm=True, val_fraction=0.25)
    x, L = ds.test.x[:, :, 0], ds.test.lengths
    np.testing.assert_allclose(x[0], (np.arange(4) - 1.5) / np.std(np.arange(4)), rtol=1e-5)
    np.testing.assert_allclose(x[1], [-1, 1, 0, 0], atol=1e-6)  # padding stays zero
    np.testing.assert_array_equal(x[2], 0)  # a constant series becomes zeros, not NaN
    for row, n in zip(x, L):
        if np.std(row[:n]) > 0:
            assert abs(row[:n].mean()) < 1e-5 and abs(row[:n].std() - 1) < 1e-4


def test_validation_split_is_stratified_seeded_and_from_train(tmp_path):
    make_ucr(tmp_path, "S", toy_rows(40), toy_rows(10, seed=3))
    a = archives.load_ucr("S", str(tmp_path), seed=1, val_fraction=0.25)
    b = archives.load_ucr("S", str(tmp_path), seed=1, val_fraction=0.25)
    c = archives.load_ucr("S", str(tmp_path), seed=2, val_fraction=0.25)
    assert len(a.val) == 10 and np.bincount(a.val.y.astype(int)).tolist() == [5, 5]
    assert set(ids(a.train)).isdisjoint(ids(a.val))
    assert sorted(ids(a.train) + ids(a.val)) == list(range(1000, 1040))
    assert ids(a.val) == ids(b.val) and ids(a.val) != ids(c.val)
    assert ids(a.test) == ids(c.test) == list(range(1000, 1010))  # the test set does not move with the seed


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 7, 2)).astype(np.float32)
    y = np.array(["cat", "dog"] * 25)
    lengths = rng.integers(3, 8, 50)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y, lengths=lengths)
    ds = archives.load_binary(f"npz:{path}", seed=0, val_fraction=0.25)
    assert ds.info["labels"] == {"cat": 0, "dog": 1}
    assert len(ds.test) == 10 and len(ds.val) == 10 and len(ds.train) == 30
    assert ds.train.x.shape[1:] == (7, 2)
    for s in (ds.train, ds.val, ds.test):
        past = np.arange(7)[None, :] >= s.lengths[:, None]
        assert np.all(s.x[past] == 0)
    np.savez(tmp_path / "bad.npz", X=X)
    with pytest.raises(DataError, match="lacks array 'y'"):
        archives.load_binary(f"npz:{tmp_path / 'bad.npz'}")


def test_loader_errors(tmp_path):
    make_ucr(tmp_path, "Three", toy_rows(9, labels=(1, 2)) + [[3, 1, 2, 3, 4, 5, 6]], toy_rows(4, labels=(1, 2)))
    with pytest.raises(DataError, match=r"Three has 3 classes \(1, 2, 3\); a binary task needs exactly 2: "
                                        r"use python -m experiments.classify"):
        archives.load_binary("ucr:Three", str(tmp_path))
    assert archives.load_ucr("Three", str(tmp_path)).info["num_classes"] == 3
    bad = toy_rows(6)
    bad[3][2] = "abc"
    make_ucr(tmp_path, "Bad", bad, toy_rows(4))
    with pytest.raises(DataError, match=r"Bad_TRAIN.tsv, line 4: non-numeric value 'abc'"):
        archives.load_ucr("Bad", str(tmp_path))
    with pytest.raises(DataError, match="Nope_TRAIN.tsv"):
        archives.load_ucr("Nope", str(tmp_path))
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        archives.load_binary("mnist")
    with pytest.raises(DataError, match="needs --data_dir"):
        archives.load_binary("ucr:ECG200", None)


def test_baselines_table(tmp_path):
    (tmp_path / "ucr").mkdir()
    (tmp_path / "BASELINES.md").write_text(
        "# made up\n\n| dataset | A | B |\n|---|---|---|\n| Toy | .5 | – |\n| Other | 1.000 | .25 |\n\ntext\n")
    assert archives.read_baselines(str(tmp_path / "ucr"), "Toy") == {"A": 0.5, "B": None}
    assert archives.read_baselines(str(tmp_path / "ucr"), "Missing") is None



# -- K classes ------------------------------------------------------------------------------------

TS_HEAD = ("# made up\n@problemName {name}\n@timeStamps false\n@missing {missing}\n@univariate {uni}\n"
           "@dimensions {dims}\n@equalLength {equal}\n{length}@classLabel true {labels}\n@data\n")


def write_ts(root: pathlib.Path, name: str, part: str, rows: list[str], *, dims: int = 1, equal: bool = True,
             length: int | None = None, labels: str = "walk run sit", missing: bool = False) -> pathlib.Path:
    """A .ts file of ``rows`` ('v,v,v:v,v,v:label') under a header that says what is given."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    head = TS_HEAD.format(name=name, missing=str(missing).lower(), uni=str(dims == 1).lower(), dims=dims,
                          equal=str(equal).lower(), length=f"@seriesLength {length}\n" if length else "",
                          labels=labels)
    path = folder / f"{name}_{part}.ts"
    path.write_text(head + "".join(r + "\n" for r in rows))
    return path


def _mv_rows(n: int, labels=("walk", "run", "sit"), lengths=(3, 5, 4), seed: int = 0) -> list[str]:
    """n two-channel rows, label i % 3, length lengths[i % len(lengths)]; channel 0 starts with id 100 + i."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        L = lengths[i % len(lengths)]
        a = [100 + i, *np.round(rng.normal(size=L - 1), 4).tolist()]
        b = np.round(rng.normal(size=L), 4).tolist()
        rows.append(",".join(map(str, a)) + ":" + ",".join(map(str, b)) + ":" + labels[i % len(labels)])
    return rows


def test_ts_multivariate_varying_length_word_labels(tmp_path):
    write_ts(tmp_path, "Mv", "TRAIN", _mv_rows(18), dims=2, equal=False)
    write_ts(tmp_path, "Mv", "TEST", _mv_rows(6, seed=1), dims=2, equal=False)
    ds = archives.load_classification("ucr:Mv", str(tmp_path), seed=0, val_fraction=0.34)
    assert ds.info["labels"] == {"run": 0, "sit": 1, "walk": 2} and ds.info["num_classes"] == 3
    assert ds.info["features"] == 2 and ds.info["length"] == 5 and ds.info["length_range"] == [3, 5]
    assert ds.train.x.shape[1:] == (5, 2) and len(ds.train) + len(ds.val) == 18
    assert ds.info["class_counts"]["train"] == [4, 4, 4] and ds.info["class_counts"]["val"] == [2, 2, 2]
    np.testing.assert_array_equal(ds.test.lengths, [3, 5, 4, 3, 5, 4])
    np.testing.assert_array_equal(ds.test.y, [2, 0, 1, 2, 0, 1])
    assert ds.test.y.dtype == np.float32
    # values in place, zeros past each length (the models read lengths, never this padding)
    first = _mv_rows(6, seed=1)[0].split(":")
    np.testing.assert_allclose(ds.test.x[0, :3, 0], [float(v) for v in first[0].split(",")], rtol=1e-6)
    np.testing.assert_allclose(ds.test.x[0, :3, 1], [float(v) for v in first[1].split(",")], rtol=1e-6)
    assert np.all(ds.test.x[0, 3:] == 0)
    with pytest.raises(DataError, match="Mv has 3 classes .*use python -m experiments.classify"):
        archives.load_binary("ucr:Mv", str(tmp_path))


def test_tsv_with_many_numeric_classes_sorts_numerically(tmp_path):
    rows = [[c, 1000 + i, float(c), 0.5 * c, 1.0] for i, c in enumerate([10, 2, 1, 2, 10, 1, 2, 10, 1, 2])]
    make_ucr(tmp_path, "Num", rows, rows[:4])
    ds = archives.load_classification("ucr:Num", str(tmp_path), val_fraction=0.3)
    assert ds.info["labels"] == {"1": 0, "2": 1, "10": 2}
    np.testing.assert_array_equal(ds.test.y, [2, 1, 0, 1])


def test_missing_values_counted_or_refused(tmp_path):
    rows = _mv_rows(9, lengths=(5,))
    rows[0] = "100,?,3,4,5:1,2,NaN,?,5:walk"  # 3 gaps in one series
    rows[4] = "104,1,2,?,9:1,1,1,1,1:run"     # 1 in another
    write_ts(tmp_path, "Gap", "TRAIN", rows, dims=2, length=5, missing=True)
    write_ts(tmp_path, "Gap", "TEST", _mv_rows(3, lengths=(5,)), dims=2, length=5)
    with pytest.warns(archives.MissingValuesWarning, match=r"Gap_TRAIN.ts: 4 missing values inside 2 series"):
        ds = archives.load_classification("ucr:Gap", str(tmp_path), val_fraction=0.34)
    assert ds.info["missing_values"]["train"] == 4
    x = {int(round(r[0, 0])): r for s in (ds.train, ds.val) for r in s.x}
    np.testing.assert_allclose(x[100][:, 0], [100, 51.5, 3, 4, 5], rtol=1e-6)
    np.testing.assert_allclose(x[100][:, 1], [1, 2, 3, 4, 5], rtol=1e-6)
    np.testing.assert_allclose(x[104][:, 0], [104, 1, 2, 5.5, 9], rtol=1e-6)
    with pytest.raises(DataError, match=r"Gap_TRAIN.ts, line \d+: 3 missing values inside the series \(missing='error'"):
        archives.load_classification("ucr:Gap", str(tmp_path), missing="error")
    with pytest.raises(DataError, match="missing must be one of interpolate, error"):
        archives.load_classification("ucr:Gap", str(tmp_path), missing="drop")


def _bad_input_cases(root: pathlib.Path) -> dict[str, tuple[str, str]]:
    """Each bad input the issue names: the spec to load and the message it must give."""
    good = _mv_rows(6, lengths=(4,))
    write_ts(root, "One", "TRAIN", _mv_rows(6, labels=("walk",), lengths=(4,)), dims=2, length=4)
    write_ts(root, "One", "TEST", good, dims=2, length=4)
    write_ts(root, "Unseen", "TRAIN", _mv_rows(6, labels=("walk", "run"), lengths=(4,)), dims=2, length=4)
    write_ts(root, "Unseen", "TEST", good, dims=2, length=4)
    write_ts(root, "Chan", "TRAIN", good[:3] + ["1,2,3,4:sit"] + good[4:], dims=2, length=4)
    write_ts(root, "Chan", "TEST", good, dims=2, length=4)
    write_ts(root, "Len", "TRAIN", good[:2] + ["1,2,3:4,5,6:sit"] + good[3:], dims=2, length=4)
    write_ts(root, "Len", "TEST", good, dims=2, length=4)
    write_ts(root, "Lab", "TRAIN", good[:5] + ["1,2,3,4:4,5,6,7:jump"], dims=2, length=4)
    write_ts(root, "Lab", "TEST", good, dims=2, length=4)
    write_ts(root, "Empty", "TRAIN", good[:1] + ["?,?,?,?:?,?,?,?:run"] + good[2:], dims=2, length=4)
    write_ts(root, "Empty", "TEST", good, dims=2, length=4)
    write_ts(root, "Chan1", "TRAIN", good[:3] + ["1,2,3,4:?,?,?,?:sit"] + good[4:], dims=2, length=4)
    write_ts(root, "Chan1", "TEST", good, dims=2, length=4)
    return {
        "one class in train": ("One", r"One: the training data holds only class walk; classification needs at least 2 classes"),
        "test label unseen": ("Unseen", r"Unseen: test label sit \(2 rows\) never occurs in the training data "
                                        r"\(2 classes: run, walk\); drop or relabel those rows"),
        "channels vs header": ("Chan", r"Chan_TRAIN.ts, line \d+: 1 channels, but the header says @dimensions 2"),
        "length vs header": ("Len", r"Len_TRAIN.ts, line \d+: a channel of 3 values, but the header says "
                                    r"@equalLength true, @seriesLength 4"),
        "label vs header": ("Lab", r"Lab_TRAIN.ts, line \d+: label 'jump' is not in the header's @classLabel list"),
        "no values": ("Empty", r"Empty_TRAIN.ts, line \d+: the series has no values"),
        "a channel with no values": ("Chan1", r"Chan1_TRAIN.ts, line \d+, channel 2 has fewer than two values"),
    }


def test_bad_inputs_name_the_problem(tmp_path):
    for case, (name, message) in _bad_input_cases(tmp_path).items():
        before = {p: p.read_bytes() for p in (tmp_path / name).iterdir()}
        with pytest.raises(DataError, match=message):
            archives.load_classification(f"ucr:{name}", str(tmp_path))
        assert {p: p.read_bytes() for p in (tmp_path / name).iterdir()} == before, case  # nothing changed


def test_npz_integer_labels_k_classes(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 7, 3)).astype(np.float32)
    y = np.arange(50) % 5
    np.savez(tmp_path / "k.npz", X=X, y=y)
    ds = archives.load_classification(f"npz:{tmp_path / 'k.npz'}", val_fraction=0.25)
    assert ds.info["num_classes"] == 5 and ds.info["labels"] == {str(k): k for k in range(5)}
    assert len(ds.test) == 10 and np.bincount(ds.test.y.astype(int)).tolist() == [2] * 5
    assert sorted(np.concatenate([ds.train.y, ds.val.y, ds.test.y]).astype(int).tolist()) == sorted(y.tolist())


MULTICLASS_README = {  # name: (train, test, channels, length range, classes) as ../shared/data/README.md lists them
    "ArrowHead": (36, 175, 1, (251, 251), 3),
    "OSULeaf": (200, 242, 1, (427, 427), 6),
    "BasicMotions": (40, 40, 6, (100, 100), 4),
    "JapaneseVowels": (270, 370, 12, (7, 29), 9),
}


@pytest.mark.parametrize("name", sorted(MULTICLASS_README))
def test_shared_multiclass_sets_load_as_documented(shared_data_dir, name):
    folder = shared_data_dir / "multiclass"
    if not (folder / name).is_dir():
        pytest.skip(f"{folder / name} not found")
    n_train, n_test, channels, (lo, hi), K = MULTICLASS_README[name]
    ds = archives.load_classification(f"ucr:{name}", str(folder), seed=0, znorm=True)
    assert len(ds.train) + len(ds.val) == n_train and len(ds.test) == n_test
    assert ds.num_features == channels and ds.info["num_classes"] == K
    assert tuple(ds.info["length_range"]) == (lo, hi) and ds.train.x.shape[1] == hi
    assert (ds.train.lengths is not None) == (lo < hi)
    assert sorted(set(ds.test.y.astype(int))) == list(range(K))
    assert all(np.isfinite(s.x).all() for s in (ds.train, ds.val, ds.test))
    if name == "BasicMotions":
        assert set(ds.info["labels"]) == {"Badminton", "Running", "Standing", "Walking"}

# -- metrics --------------------------------------------------------------------------------------

def test_metrics_by_hand():
    logits = np.array([2.0, -1.0, 0.5, -0.2, 3.0, -3.0])
    y = np.array([1, 0, 0, 1, 1, 0])
    m = M.classification_metrics(logits, y)
    # predictions 1 0 1 0 1 0: TP 2, FP 1, FN 1, TN 2
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # positive scores 2, -0.2, 3 against negatives -1, 0.5, -3: 8 of 9 pairs ordered right (not -0.2 > 0.5)
    assert m["roc_auc"] == pytest.approx(8 / 9)


def test_roc_auc_ties_and_edge_cases():
    assert M.roc_auc([1, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert M.roc_auc([0, 1, 1, 2], [0, 0, 1, 1]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert M.roc_auc([3, 2, 1], [0, 0, 1]) == 0.0
    assert np.isnan(M.roc_auc([1, 2], [1, 1]))
    m = M.classification_metrics([-1, -2], [0, 1])  # no positive predictions
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0


# -- LSTM-FCN -------------------------------------------------------------------------------------

FCN_SMALL = ModelConfig(architecture="lstm_fcn", hidden_size=4, dropout=0.5, conv_filters=(6, 8, 6))


def jitted(model):
    """``model(x, lengths)`` as one compiled program (eager op-by-op dispatch is slower to warm up)."""
    graphdef, state = nnx.split(model)
    f = jax.jit(lambda s, x, lengths: nnx.merge(graphdef, s)(x, lengths))
    return lambda x, lengths=None: f(state, x, lengths)


@pytest.mark.parametrize("norm", ["global", "layer", "group", "instance"])
def test_lstm_fcn_shape_and_lengths_invariance(norm):
    cfg = ModelConfig(architecture="lstm_fcn", hidden_size=4, conv_filters=(6, 8, 6), conv_norm=norm)
    model = make_classifier(2, cfg, nnx.Rngs(0), length=12)
    assert isinstance(model, LSTMFCN)
    f = jitted(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 12, 2)).astype(np.float32)
    lengths = np.array([12, 5, 8])
    out = f(x, lengths)
    assert out.shape == (3,) and f(x).shape == (3,)
    garbage = x.copy()
    for b, L in enumerate(lengths):
        garbage[b, L:] = rng.normal(scale=50, size=(12 - L, 2))
    np.testing.assert_allclose(f(garbage, lengths), out, atol=1e-5)
    # A full-length row gives the same logit with or without lengths.
    np.testing.assert_allclose(f(x)[0], out[0], atol=1e-5)


def test_lstm_fcn_config_errors():
    with pytest.raises(ConfigError, match="needs the series length"):
        make_classifier(1, FCN_SMALL, nnx.Rngs(0))
    with pytest.raises(ConfigError, match="architecture"):
        ModelConfig(architecture="transformer")
    with pytest.raises(ConfigError, match="built for series of length 12"):
        make_classifier(1, FCN_SMALL, nnx.Rngs(0), length=12)(np.zeros((1, 10, 1), np.float32))
    assert isinstance(make_classifier(1, ModelConfig(), nnx.Rngs(0)), Classifier)


def test_lstm_fcn_train_step_changes_every_parameter():
    # Two channels: the shuffled LSTM branch then runs two steps, so its recurrent kernel is used too
    # (a univariate series is one step from a zero state, where that kernel gets no gradient).
    model = make_classifier(2, FCN_SMALL, nnx.Rngs(0), length=10)
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    x = np.random.default_rng(1).normal(size=(8, 10, 2)).astype(np.float32)
    y = jnp.array([0, 1] * 4, jnp.float32)

    def loss(p):
        return optax.sigmoid_binary_cross_entropy(nnx.merge(graphdef, p)(x, key=jax.random.key(0)), y).mean()

    tx = optax.adam(1e-2)

    @jax.jit
    def step(p):
        updates, _ = tx.update(jax.grad(loss)(p), tx.init(p), p)
        return optax.apply_updates(p, updates)

    new = step(params)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, new)
    flat = jax.tree_util.tree_flatten_with_path(changed)[0]
    assert flat and all(v for _, v in flat), [jax.tree_util.keystr(k) for k, v in flat if not v]


# -- the front-end --------------------------------------------------------------------------------

def _error_cases(root: pathlib.Path) -> dict[str, tuple[list[str], str]]:
    make_ucr(root, "Three", toy_rows(9, labels=(1, 2)) + [[3, 1, 2, 3, 4, 5, 6]], toy_rows(4, labels=(1, 2)))
    bad = toy_rows(6)
    bad[4][3] = "x1"
    make_ucr(root, "Bad", bad, toy_rows(4))
    d = f"--data_dir={root}"
    return {
        "missing file": (["--dataset=ucr:Nope", d], "Nope_TRAIN.tsv"),
        "non-numeric": (["--dataset=ucr:Bad", d], "line 5: non-numeric value 'x1'"),
        "three classes": (["--dataset=ucr:Three", d], "Three has 3 classes (1, 2, 3)"),
        "unknown dataset": (["--dataset=mnist"], "unknown dataset 'mnist'"),
        "no data_dir": (["--dataset=ucr:Toy"], "needs --data_dir"),
    }


def test_binary_errors_are_one_line(tmp_path):
    cases = _error_cases(tmp_path)
    for name, (args, _) in cases.items():  # in process (tests/harness.py's run_front_end)
        proc = run_front_end("binary", *args, f"--workdir={tmp_path / 'run'}")
        out, err = proc.stdout, proc.stderr
        lines = err.strip().splitlines()
        assert proc.returncode != 0, name
        assert len(lines) == 1 and lines[0].startswith("error:"), (name, err)
        assert cases[name][1] in lines[0], (name, lines[0])
        assert "Traceback" not in err + out


def test_binary_recipe_yields_to_flags(tmp_path):
    make_ucr(tmp_path, "Toy", toy_rows(24, labels=(1, 2)), toy_rows(10, labels=(1, 2), seed=5))
    workdir = tmp_path / "toy"
    r = run_front_end("binary", "--dataset=ucr:Toy", f"--data_dir={tmp_path}", "--model=lstm", "--hidden_size=4",
                      "--epochs=1", "--quiet", f"--workdir={workdir}")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((workdir / "summary.json").read_text())
    cfg = s["config"]
    assert cfg["model"]["architecture"] == "lstm" and cfg["model"]["hidden_size"] == [4]
    assert cfg["epochs"] == 1 and cfg["batch_size"] == 16  # the recipe's batch size
    assert cfg["data"]["znorm"] is True
    assert s["config_source"]["file"].endswith("ucr.py")
    assert {"epochs", "model.architecture", "model.hidden_size"} <= set(s["config_source"]["overrides"])
    assert s["labels"] == {"1": 0, "2": 1} and "baselines" not in s
    assert sum(map(sum, s["test_confusion_matrix"])) == 10


def test_binary_on_a_real_ucr_set(shared_data_dir, tmp_path):
    workdir = tmp_path / "ecg"
    r = run_front_end("binary", "--dataset=ucr:ECG200", f"--data_dir={shared_data_dir / 'ucr'}",
                      "--epochs=1", "--quiet", f"--workdir={workdir}")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((workdir / "summary.json").read_text())
    assert s["labels"] == {"-1": 0, "1": 1}
    assert s["dataset"]["sizes"] == {"train": 80, "val": 20, "test": 100}
    assert 0.0 <= s["test_accuracy"] <= 1.0 and 0.0 <= s["test_roc_auc"] <= 1.0
    assert sum(map(sum, s["test_confusion_matrix"])) == 100
    assert s["baselines"]["1NN-DTW"] == pytest.approx(0.88)
    assert s["config"]["model"]["architecture"] == "lstm_fcn" and s["epochs_trained"] == 1
    assert (workdir / "confusion_matrix.png").stat().st_size > 0
    assert (workdir / "learning_curves.png").stat().st_size > 0


def test_ucr_runner_names_the_problem_of_a_failed_run():
    from experiments.ucr import _error_line

    traceback = ("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad shape\n"
                 "--------------------\nFor simplicity, JAX has removed its internal frames from the traceback")
    assert _error_line(traceback, 1) == "ValueError: bad shape"
    assert _error_line("loading...\nerror: no file /x/y_TRAIN.tsv\n", 2) == "no file /x/y_TRAIN.tsv"
    assert _error_line("", -9) == "exit status -9"


def test_standardise_channels_uses_training_statistics_over_valid_steps(tmp_path):
    write_ts(tmp_path, "Mv", "TRAIN", _mv_rows(18), dims=2, equal=False)
    write_ts(tmp_path, "Mv", "TEST", _mv_rows(6, seed=1), dims=2, equal=False)
    raw = archives.load_classification("ucr:Mv", str(tmp_path), seed=0, val_fraction=0.34)
    ds = archives.standardise_channels(raw)
    tr, L = raw.train, raw.train.lengths
    valid = np.arange(tr.x.shape[1])[None, :] < L[:, None]
    for d in range(2):
        v = tr.x[:, :, d][valid].astype(np.float64)
        for a, b in ((raw.train, ds.train), (raw.test, ds.test)):
            ok = np.arange(a.x.shape[1])[None, :] < a.lengths[:, None]
            np.testing.assert_allclose(b.x[:, :, d][ok], (a.x[:, :, d][ok] - v.mean()) / v.std(), rtol=1e-5, atol=1e-6)
            assert np.all(b.x[:, :, d][~ok] == 0)
    z = ds.train.x[valid]
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-4)
