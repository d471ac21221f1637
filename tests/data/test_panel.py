"""Panels of many series: the .tsf and long-CSV readers, per-series transforms, global-model windows."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from lstm_jax.data import panel, series
from lstm_jax.errors import ConfigError, DataError

SHARED_M1 = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "forecast" / "m1_yearly_dev.tsf"

TSF = """# a comment
@relation test
@attribute series_name string
@attribute start_timestamp date
@frequency quarterly
@horizon 3
@missing true
@equallength false
@data
A:2001-01-01 00-00-00:1,2,3,4,5,6
B:2002-01-01 00-00-00:10,?,30,40
"""


def write(tmp_path, text: str, name: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_tsf_reads_names_values_header_and_fills_gaps(tmp_path):
    p = panel.read_tsf(write(tmp_path, TSF, "x.tsf"))
    assert [s.name for s in p.series] == ["A", "B"]
    assert p.horizon == 3 and p.frequency == "quarterly" and p.season == 4
    assert p.series[0].values_T.tolist() == [1, 2, 3, 4, 5, 6]
    assert p.series[1].values_T.tolist() == [10, 20, 30, 40]  # '?' interpolated
    assert p.series[0].start == "2001-01-01 00-00-00"


@pytest.mark.parametrize("text, message", [
    ("", "no @data"),
    ("@frequency yearly\n@data\n", "no series"),
    ("@attribute series_name string\n@horizon six\n@data\nA:1,2,3\n", "@horizon"),
    ("@attribute series_name string\n@data\nA:1,x,3\n", "line 3 (A) is 'x', not a number"),
    ("@attribute series_name string\n@data\nA:1,inf,3\n", "not a finite number"),
    ("@attribute series_name string\n@data\nA:1,2\nA:3,4\n", "more than once"),
    ("hello\n@data\nA:1\n", "expected a header line"),
])
def test_tsf_bad_input_is_one_data_error(tmp_path, text, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        panel.read_tsf(write(tmp_path, text, "bad.tsf"))
    assert "\n" not in str(e.value)


def test_tsf_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        panel.read_tsf(tmp_path / "absent.tsf")
    with pytest.raises(DataError, match="is a directory"):
        panel.read_tsf(tmp_path)


LONG = """id,t,y,x
b,2,20,0.2
a,1,1,1
a,3,3,3
b,1,10,0.1
a,2,,2
b,3,30,0.3
"""


def test_long_csv_groups_sorts_and_keeps_covariates(tmp_path):
    p = panel.read_long_csv(write(tmp_path, LONG, "long.csv"), id_column="id", time_column="t", value_column="y",
                            covariates=["x"])
    by = {s.name: s for s in p.series}
    assert by["a"].values_T.tolist() == [1, 2, 3]  # the gap at t=2 interpolated
    assert by["b"].values_T.tolist() == [10, 20, 30]  # sorted by time, not file order
    np.testing.assert_allclose(by["b"].covariates_TxC[:, 0], [0.1, 0.2, 0.3])
    assert p.covariate_names == ("x",) and p.horizon is None
    one = panel.read_long_csv(write(tmp_path, LONG, "long.csv"), id_column=None, time_column=None, value_column="x")
    assert len(one) == 1 and one.series[0].values_T.tolist() == [0.2, 1, 3, 0.1, 2, 0.3]  # file order


def test_long_csv_bad_input(tmp_path):
    path = write(tmp_path, LONG, "long.csv")
    with pytest.raises(DataError, match=r"no column 'z' \(--column\).*available: id, t, y, x"):
        panel.read_long_csv(path, id_column="id", time_column="t", value_column="z")
    with pytest.raises(DataError, match=r"no column 'nope' \(--id_column\)"):
        panel.read_long_csv(path, id_column="nope", time_column="t", value_column="y")
    with pytest.raises(DataError, match="series 'a' has two rows at time '1'"):
        panel.read_long_csv(write(tmp_path, LONG + "a,1,5,5\n", "dup.csv"), id_column="id", time_column="t", value_column="y")
    with pytest.raises(DataError, match="line 3, column y is 'abc', not a number"):
        panel.read_long_csv(write(tmp_path, "id,t,y\na,1,1\na,2,abc\n", "nan.csv"), id_column="id", time_column="t",
                            value_column="y")
    with pytest.raises(DataError, match="is empty"):
        panel.read_long_csv(write(tmp_path, "", "empty.csv"), id_column=None, time_column=None, value_column="y")
    with pytest.raises(ConfigError, match="cannot also be a covariate"):
        panel.read_long_csv(path, id_column="id", time_column="t", value_column="y", covariates=["y"])


def _panel_values():
    rng = np.random.default_rng(0)
    return [np.exp(np.cumsum(rng.normal(0.05, 0.1, n))) * scale for n, scale in ((12, 1.0), (7, 1e4), (20, 3e2))]


@pytest.mark.parametrize("log, scaling, deseason", [(True, "mase", False), (False, "standard", False),
                                                     (True, "mase", True), (False, "none", True)])
def test_windows_and_per_series_transforms_invert_exactly(log, scaling, deseason):
    values = _panel_values()
    chains = [panel.series_transform(v, log=log, season=2, deseason=deseason, scaling=scaling) for v in values]
    z = [c.forward(v) for c, v in zip(chains, values)]
    w = panel.make_windows(z, 4, 3, level="last", min_input=2)
    for x_LxD, y_H, lev, i, end in zip(w.x_NxLxD, w.y_NxH, w.level_N, w.series_N, w.end_N):
        # The targets, back through the window's level and the series' chain, are the raw values.
        np.testing.assert_allclose(chains[i].inverse(y_H.astype(np.float64) + lev, values[i][:end]),
                                   values[i][end:end + 3], rtol=1e-5)
        assert lev == pytest.approx(z[i][end - 1])  # level = the window's last input
        assert x_LxD[-1, 0] == 0.0
    # A short input is left-padded with the series' first value (relative to the level).
    first = w.x_NxLxD[(w.series_N == 0) & (w.end_N == 2)][0, :, 0]
    np.testing.assert_allclose(first + z[0][1], [z[0][0], z[0][0], z[0][0], z[0][1]], rtol=1e-5)
    # Every window with >= 2 inputs and 3 targets, per series: n - 2 - 3 + 1.
    assert [int((w.series_N == i).sum()) for i in range(3)] == [len(v) - 4 for v in values]


def test_mase_scaling_makes_an_error_of_one_a_mase_of_one():
    v = _panel_values()[1]
    chain = panel.series_transform(v, log=False, scaling="mase")
    z = chain.forward(v)
    assert np.mean(np.abs(np.diff(z))) == pytest.approx(1.0)
    assert series.mase_scale(v) == pytest.approx(chain.transforms[-1].scale)


def test_level_normalisation_makes_series_of_any_scale_alike():
    base = np.array([1.0, 1.1, 1.3, 1.2, 1.5, 1.7, 1.6, 1.9])
    z = [panel.series_transform(base * s, log=True, scaling="none").forward(base * s) for s in (1.0, 1e6)]
    w = panel.make_windows(z, 3, 2, level="last")
    n = len(w) // 2
    np.testing.assert_allclose(w.x_NxLxD[:n], w.x_NxLxD[n:], atol=1e-6)  # log(x / level): scale-free
    np.testing.assert_allclose(w.y_NxH[:n], w.y_NxH[n:], atol=1e-6)
    mean = panel.make_windows(z, 3, 2, level="mean", season=2)
    k = int(np.flatnonzero((mean.series_N == 0) & (mean.end_N == 3))[0])
    np.testing.assert_allclose(mean.level_N[k], np.mean(z[0][1:3]))  # the mean of the last season of inputs


def test_split_windows_and_last_windows():
    z = [np.arange(10.0), np.arange(6.0)]
    train = panel.make_windows(z, 3, 2, targets_before=[8, 4])
    assert max(e + 2 for e, i in zip(train.end_N, train.series_N) if i == 0) <= 8
    val = panel.make_windows(z, 3, 2, targets_from=[9, 5])
    assert val.end_N.tolist() == [8, 4]  # the one window whose targets end each series
    x, lev = panel.last_windows(z, 3)
    assert lev.tolist() == [9.0, 5.0] and x[:, :, 0].tolist() == [[-2, -1, 0], [-2, -1, 0]]
    cov = [np.ones((10, 2)), np.zeros((6, 2))]
    xc = panel.make_windows(z, 3, 2, covariates=cov)
    assert xc.x_NxLxD.shape[-1] == 3 and np.all(xc.x_NxLxD[xc.series_N == 0, :, 1:] == 1)
    with pytest.raises(DataError, match="long enough"):
        panel.make_windows(z, 3, 20)
    with pytest.raises(ConfigError):
        panel.make_windows(z, 3, 2, level="median")


def test_scale_covariates_uses_the_training_part_only():
    cov = np.array([[1.0, 5.0], [3.0, 5.0], [100.0, 7.0]])
    out = panel.scale_covariates(cov, 2)
    np.testing.assert_allclose(out[:2, 0], [-1, 1])
    np.testing.assert_allclose(out[:, 1], [0, 0, 2])  # a constant training part: shifted only


@pytest.mark.skipif(not SHARED_M1.is_file(), reason="../shared/data is absent")
def test_reads_the_shared_m1_file():
    p = panel.read_tsf(SHARED_M1)
    assert len(p) == 90 and p.horizon == 6 and p.season == 1
    assert min(len(s) for s in p.series) == 15 and p.series[0].name == "T1"
