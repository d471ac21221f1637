"""lstm_jax.study.report: the best 10%, Welch + Holm, fANOVA, and report.md end to end."""

from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np
import pytest
from scipy import stats

optuna = pytest.importorskip("optuna")

from lstm_jax.errors import ConfigError, UserError  # noqa: E402
from lstm_jax.study.report import (  # noqa: E402
    Comparison,
    StudyInfo,
    TrialRecord,
    best_fraction,
    binned_median,
    compare,
    holm,
    importances,
    safe_name,
    verdict,
    write_report,
)

SPACE = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
         "hidden_size": optuna.distributions.IntDistribution(16, 128)}


def record(number, value, test=None, state="COMPLETE", variant="lstm", dataset="synthetic", params=None, note=""):
    return TrialRecord(dataset=dataset, variant=variant, number=number, state=state, params=params or {},
                       value=value, test=test, note=note)


def test_best_fraction_ranks_complete_trials_on_validation():
    trials = [record(k, float(v)) for k, v in enumerate(np.random.default_rng(0).permutation(25))]
    trials += [record(25, 99.0, state="PRUNED"), record(26, None, state="FAIL"), record(27, -5.0, state="PRUNED"),
               record(28, float("nan"))]
    best = best_fraction(trials, "maximize", space_empty=False)
    assert [t.value for t in best] == [24.0, 23.0, 22.0]  # ceil(10% of 25) = 3, pruned 99 left out
    assert [t.value for t in best_fraction(trials, "minimize", space_empty=False)] == [0.0, 1.0, 2.0]
    assert len(best_fraction(trials[:5], "maximize", space_empty=False)) == 1  # ceil(0.5), at least one
    every = best_fraction(trials, "maximize", space_empty=True)
    assert sorted(t.number for t in every) == list(range(25))  # all complete trials: they differ only by seed
    assert best_fraction([record(0, None, state="FAIL")], "maximize", space_empty=False) == []
    with pytest.raises(ConfigError, match="direction"):
        best_fraction(trials, "max", space_empty=False)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04; the last is lifted to 0.06 (monotone)
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    # sorted 0.01, 0.6, 0.7 -> 0.03, 1.2 capped at 1, 0.7 lifted to 1
    assert holm([0.6, 0.7, 0.01]) == pytest.approx([1.0, 1.0, 0.03])


def test_compare_is_welch_with_holm():
    rng = np.random.default_rng(1)
    groups = {"lstm": list(rng.normal(0.80, 0.02, 6)), "gru": list(rng.normal(0.81, 0.05, 5)),
              "noaf": list(rng.normal(0.60, 0.03, 7)), "nig": list(rng.normal(0.78, 0.01, 4)), "np": [0.7]}
    out = {c.variant: c for c in compare(groups, "lstm")}
    assert list(out) == ["gru", "noaf", "nig", "np"]
    tested = ["gru", "noaf", "nig"]
    for v in tested:
        ref = stats.ttest_ind(groups[v], groups["lstm"], equal_var=False)
        c = out[v]
        assert (c.n, c.t, c.p_raw) == (len(groups[v]), pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
        assert c.mean == pytest.approx(np.mean(groups[v])) and c.std == pytest.approx(np.std(groups[v], ddof=1))
        assert c.difference == pytest.approx(np.mean(groups[v]) - np.mean(groups["lstm"]))
    # Holm over the three tested variants only (np has one value and is not counted in m)
    raw = [out[v].p_raw for v in tested]
    order = np.argsort(raw)
    expected, running = {}, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (3 - k) * raw[i]))
        expected[tested[i]] = running
    assert {v: out[v].p_holm for v in tested} == pytest.approx(expected)
    assert out["np"].p_raw is None and out["np"].p_holm is None and "needs 2" in out["np"].reason

    short = compare({"lstm": [0.8], "gru": [0.7, 0.75]}, "lstm")
    assert short[0].p_holm is None and "baseline lstm" in short[0].reason
    missing = compare({"gru": [0.7, 0.75]}, "lstm")
    assert missing[0].p_holm is None and missing[0].baseline_mean is None
    flat = compare({"lstm": [0.8, 0.8], "gru": [0.7, 0.7]}, "lstm")
    assert flat[0].p_holm is None and "variance" in flat[0].reason


def test_compare_over_a_whole_search_is_mann_whitney_on_medians():
    rng = np.random.default_rng(2)
    groups = {"lstm": list(rng.normal(0.9, 0.05, 30)), "nfg": list(rng.normal(0.8, 0.05, 30)),
              "np": list(rng.normal(0.9, 0.05, 30))}
    out = {c.variant: c for c in compare(groups, "lstm", test="mannwhitney")}
    for v in ("nfg", "np"):
        ref = stats.mannwhitneyu(groups[v], groups["lstm"], alternative="two-sided").pvalue
        assert out[v].p_raw == pytest.approx(ref) and out[v].t is None
        assert out[v].difference == pytest.approx(np.median(groups[v]) - np.median(groups["lstm"]))
    assert out["nfg"].p_holm == pytest.approx(min(1.0, 2 * out["nfg"].p_raw))  # the smaller of two p-values
    assert verdict(out["nfg"], "maximize") == "worse" and verdict(out["np"], "maximize") == "no significant difference"
    with pytest.raises(ConfigError):
        compare(groups, "lstm", test="ttest")


def test_verdict_follows_the_direction():
    worse_for_max = Comparison("noaf", 5, 0.6, 0.01, 0.8, -0.2, -30.0, 1e-6, 3e-6)
    assert verdict(worse_for_max, "maximize") == "worse"
    assert verdict(worse_for_max, "minimize") == "better"
    assert verdict(Comparison("gru", 5, 0.79, 0.01, 0.8, -0.01, -1.0, 0.02, 0.06), "maximize") \
        == "no significant difference"
    assert verdict(Comparison("np", 1, 0.7, None, 0.8, -0.1, None, None, None, "1 value(s)"),
                   "maximize").startswith("not tested")


def lr_trials(n, dataset="synthetic", variants=("lstm", "gru"), seed=0):
    """Validation value peaked in log10(learning_rate) at -2.5, flat in hidden_size and the variant."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        value = 0.9 - 0.1 * (math.log10(lr) + 2.5) ** 2 + float(rng.normal(0, 0.002))
        out.append(record(k, value, test=value, variant=variants[k % len(variants)], dataset=dataset,
                          params={"learning_rate": lr, "hidden_size": int(rng.integers(16, 129))}))
    return out


def test_importances_find_the_learning_rate():
    found = importances(lr_trials(40), SPACE, "maximize")
    assert isinstance(found, dict)
    assert max(found, key=found.get) == "learning_rate" and found["learning_rate"] > 0.5
    assert set(found) == {"learning_rate", "hidden_size", "variant"}
    assert sum(found.values()) == pytest.approx(1.0)

    assert isinstance(importances(lr_trials(3), SPACE, "maximize"), str)
    flat = [dataclasses.replace(t, value=0.5) for t in lr_trials(10)]
    assert "do not vary" in importances(flat, SPACE, "maximize")
    # one factor would get all the variance by construction: no ranking to report
    assert "nothing to rank" in importances(lr_trials(10), {}, "maximize")
    assert "nothing to rank" in importances(lr_trials(10, variants=("lstm",)), {}, "maximize")
    # trials outside the space (a changed range) or missing a hyperparameter are left out, not fatal
    narrow = {"learning_rate": optuna.distributions.FloatDistribution(1e-2, 1e-1, log=True),
              "hidden_size": SPACE["hidden_size"]}
    inside = sum(t.params["learning_rate"] >= 1e-2 for t in lr_trials(8))
    assert 0 < inside < 4
    assert importances(lr_trials(8), narrow, "maximize") == f"{inside} complete trial(s) with every hyperparameter, " \
        "fANOVA needs 4"
    missing = [dataclasses.replace(t, params={"learning_rate": t.params["learning_rate"]}) for t in lr_trials(10)]
    assert importances(missing, SPACE, "maximize") == "0 complete trial(s) with every hyperparameter, fANOVA needs 4"


def test_importances_without_scikit_learn(monkeypatch):
    def no_sklearn(**kwargs):  # what optuna's evaluator raises when sklearn cannot be imported
        raise ImportError("Tried to import 'sklearn' but failed.")

    monkeypatch.setattr(optuna.importance, "FanovaImportanceEvaluator", no_sklearn)
    assert "scikit-learn" in importances(lr_trials(10), SPACE, "maximize")


def test_binned_median_and_safe_names():
    x, y = binned_median(np.arange(20.0), np.arange(20.0) * 2, bins=5)
    assert x == [1.5, 5.5, 9.5, 13.5, 17.5] and y == [3.0, 11.0, 19.0, 27.0, 35.0]  # 4 points a bin
    assert binned_median([32, 64, 32, 64], [1.0, 2.0, 3.0, 4.0]) == ([32.0, 64.0], [2.0, 3.0])  # a bin per value
    assert safe_name("ucr:ECG 200/x") == "ucr-ECG-200-x"


def study_trials():
    """2 datasets x 3 variants x 14 trials (12 complete, 1 pruned, 1 failed); noaf's test metric is far lower,
    gru's trials copy lstm's, and in synthetic/lstm the best test value sits on a trial that is not the best
    on validation."""
    rng = np.random.default_rng(3)
    trials = []
    for dataset in ("synthetic", "ucr:ECG200"):
        base = []
        for k in range(12):
            lr = float(10 ** rng.uniform(-4, -1))
            val = 0.85 + 0.01 * k + float(rng.normal(0, 0.001))
            base.append((k, val, val - 0.02 + float(rng.normal(0, 0.004)),
                         {"learning_rate": lr, "hidden_size": int(rng.integers(16, 129))}))
        for variant in ("gru", "lstm", "noaf"):  # lstm not first: the report puts the baseline first
            for k, val, test, params in base:
                if dataset == "synthetic" and variant == "lstm" and k == 0:
                    test = 0.999  # the best test value of all, on the worst validation value
                if variant == "noaf":
                    test -= 0.3
                trials.append(record(k, val, test, variant=variant, dataset=dataset, params=params))
            trials.append(record(12, 0.5, None, state="PRUNED", variant=variant, dataset=dataset, params=params))
            trials.append(record(13, None, None, state="FAIL", variant=variant, dataset=dataset, params=params,
                                 note="diverged: non-finite loss"))
    return trials


def section(report, dataset):
    start = report.index(f"## Dataset `{dataset}`")
    end = report.find("## Dataset", start + 1)
    return report[start:end if end > 0 else None]


def row(text, first_cell):
    return next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))


def test_write_report_end_to_end(tmp_path):
    info = StudyInfo(title="greff", metric="val_accuracy", test_metric="test_accuracy", direction="maximize",
                     baseline="lstm", space=SPACE, command="python -m experiments.study --study=greff",
                     best_files={("synthetic", "lstm"): "best/synthetic-lstm.json"})
    path = write_report(str(tmp_path), study_trials(), info)
    assert path == str(tmp_path / "report.md")
    report = open(path).read()
    assert "python -m experiments.study --study=greff" in report
    assert ("The test split never takes part in any choice: trials are ranked on val_accuracy; "
            "test_accuracy is only reported.") in report
    assert "Trials: 84 in all (72 complete, 6 pruned, 6 failed)." in report
    assert "[best/synthetic-lstm.json](best/synthetic-lstm.json)" in report

    for dataset in ("synthetic", "ucr:ECG200"):
        text = section(report, dataset)
        for variant in ("lstm (baseline)", "gru", "noaf"):
            assert row(text, variant)
        assert text.index("| lstm (baseline) |") < text.index("| gru |")  # the baseline's row first
        assert "Welch" in text and "Holm" in text
        assert row(text.split("### Against the baseline")[1], "noaf").endswith("| worse |")
        assert row(text.split("### Against the baseline")[1], "gru").endswith("| no significant difference |")
        assert "learning_rate" in text.split("### Hyperparameter importance")[1]
        search = text.split("### Over the whole search")[1].split("###")[0]
        assert "Mann-Whitney" in search and row(search, "noaf").endswith("| worse |")

    # synthetic/lstm: trial 0 holds the best test value (0.999) but the worst validation value; the
    # best trial is #11, the best on validation, and its test value is not 0.999
    lstm_row = row(section(report, "synthetic"), "lstm (baseline)").split(" | ")
    assert lstm_row[4] == "#11" and lstm_row[6] != "0.999"

    links = re.findall(r"\]\((report/[^)]+\.png)\)", report)
    assert "report/synthetic-best-set.png" in links and "report/ucr-ECG200-best-set.png" in links
    assert sum(link.startswith("report/ucr-ECG200-") for link in links) == 3  # the box and two marginals
    for link in links:
        assert os.path.getsize(tmp_path / link) > 1000


def test_write_report_bad_input(tmp_path):
    info = StudyInfo(title="t", metric="val_loss", test_metric="test_loss", direction="down", baseline="lstm",
                     space={})
    with pytest.raises(ConfigError, match="direction"):
        write_report(str(tmp_path), [], info)
    (tmp_path / "file").write_text("kept")
    info = dataclasses.replace(info, direction="minimize")
    with pytest.raises(UserError, match="is a file"):
        write_report(str(tmp_path / "file"), [], info)
    assert (tmp_path / "file").read_text() == "kept"
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "report").write_text("kept")
    with pytest.raises(UserError, match="is a file"):
        write_report(str(tmp_path / "study"), [], info)
    assert (tmp_path / "study" / "report").read_text() == "kept" and not (tmp_path / "study" / "report.md").exists()


def test_write_report_categorical_space_without_the_baseline(tmp_path):
    space = {"optimizer": optuna.distributions.CategoricalDistribution(["adam", "sgd"]),
             "learning_rate": SPACE["learning_rate"]}
    rng = np.random.default_rng(5)
    trials = [record(k, float(rng.normal(1.0, 0.1)), float(rng.normal(1.0, 0.1)), variant=v, dataset="ucr:A",
                     params={"optimizer": ["adam", "sgd"][k % 2], "learning_rate": float(10 ** rng.uniform(-4, -1))})
              for v in ("gru", "nig") for k in range(6)]
    info = StudyInfo(title="c", metric="val_loss", test_metric="test_loss", direction="minimize", baseline="lstm",
                     space=space)
    report = open(write_report(str(tmp_path), trials, info)).read()
    assert "lower is better" in report and "No tests: the baseline 'lstm' is not among" in report
    for param in space:
        assert os.path.getsize(tmp_path / "report" / f"ucr-A-{param}.png") > 1000
