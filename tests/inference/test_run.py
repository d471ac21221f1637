"""Loading a finished run and predicting from it: a classifier and the forecasting ensemble reproduce
their training runs' outputs bit for bit, experiments.predict writes the CSVs the README promises,
and every bad input is one line that changes nothing."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil

import jax
import numpy as np
import pytest
from harness import REPO_ROOT, run_front_end, snapshot, write_three_class_ts

from experiments import classify
from experiments.configs import classify as classify_config
from lstm_jax.data import archives
from lstm_jax.errors import CheckpointError, DataError
from lstm_jax.forecast import recipe as fr
from lstm_jax.inference.run import ClassifierRun, ForecastRun, Predictor, load_run, write_record
from lstm_jax.train.loop import fit


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    """A 3-class run (two channels, varying lengths, word labels, channel standardisation) trained
    through the experiment's own job, and the outputs of its model at the end of training."""
    tmp = tmp_path_factory.mktemp("classifier")
    root = write_three_class_ts(tmp / "data")
    config = classify_config.get_config()
    # The recurrent classifier (it streams, for the README's block), pooling the mean of its outputs.
    config.model.architecture, config.model.pooling, config.model.hidden_size = "lstm", "mean", (4,)
    config.data.min_epoch_rows, config.data.norm = 0, "channel"
    config.update({"epochs": 2, "dataset": "ucr:Tri", "data_dir": str(root)})
    job = classify.build(config)
    wd = str(tmp / "run")
    summary = fit(job.model, job.task, job.data, job.train, wd, log=lambda _: None)
    write_record(wd, job.spec, job.inputs, eval_batch_size=job.train.eval_batch_size, experiment="classify")
    expected = Predictor(job.model, job.train.eval_batch_size).outputs(job.data.test)
    return wd, str(root / "Tri" / "Tri_TEST.ts"), summary, expected


def test_a_reloaded_classifier_gives_the_trained_models_outputs_bit_for_bit(classifier_run):
    wd, test_file, summary, expected = classifier_run
    run = load_run(wd)
    assert isinstance(run, ClassifierRun) and run.classes == ["down", "flat", "up"]
    x, lengths, labels, _ = archives.read_inputs(test_file)
    got = run.predictor.outputs(run.prepare(x, lengths))  # the raw file, the run's recorded preprocessing
    np.testing.assert_array_equal(got, expected)
    pred = run.predict_file(test_file)
    assert pred.true_labels == [str(v) for v in labels]
    assert pred.accuracy == pytest.approx(summary["test_accuracy"], abs=1e-12)
    np.testing.assert_allclose(pred.probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_predict_front_end_writes_labels_and_probabilities(classifier_run, tmp_path):
    wd, test_file, summary, _ = classifier_run
    out = tmp_path / "p.csv"
    r = run_front_end("predict", f"--workdir={wd}", f"--input={test_file}", f"--output={out}")
    assert r.returncode == 0, r.stderr
    assert f"accuracy {summary['test_accuracy']:.4f}" in r.stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 15 and set(rows[0]) == {"row", "predicted", "p_down", "p_flat", "p_up", "label"}
    assert {r["predicted"] for r in rows} <= {"down", "flat", "up"}
    # An unlabelled input (.ts with '@classLabel false') is predicted too.
    text = open(test_file).read().replace("@classLabel true up down flat", "@classLabel false")
    text = "\n".join(line.rsplit(":", 1)[0] if ":" in line and not line.startswith("@") else line
                     for line in text.splitlines())
    (tmp_path / "new.ts").write_text(text + "\n")
    r = run_front_end("predict", f"--workdir={wd}", f"--input={tmp_path / 'new.ts'}", f"--output={tmp_path / 'q.csv'}")
    assert r.returncode == 0, r.stderr
    unlabelled = list(csv.DictReader(io.StringIO((tmp_path / "q.csv").read_text())))
    assert [u["predicted"] for u in unlabelled] == [p["predicted"] for p in rows] and "label" not in unlabelled[0]


def test_bad_input_is_one_line_and_changes_nothing(classifier_run, tmp_path):
    wd, test_file, _, _ = classifier_run
    before = snapshot(wd)
    (tmp_path / "empty.ts").write_text("")
    one_channel = tmp_path / "one.npz"
    np.savez(one_channel, X=np.zeros((3, 8, 1)))
    (tmp_path / "exists.csv").write_text("keep me")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    other_shape = tmp_path / "other_shape"
    shutil.copytree(wd, other_shape)
    record = json.loads((other_shape / "inference.json").read_text())
    record["model"]["config"]["hidden_size"] = 6
    (other_shape / "inference.json").write_text(json.dumps(record))
    cases = [
        ([f"--workdir={tmp_path / 'absent'}", f"--input={test_file}"], "no such folder"),
        ([f"--workdir={tmp_path / 'exists.csv'}", f"--input={test_file}"], "is a file, not a run folder"),
        ([f"--workdir={unfinished}", f"--input={test_file}"], "holds no finished run"),
        ([f"--workdir={other_shape}", f"--input={test_file}"], "a checkpoint of another model shape"),
        ([f"--workdir={wd}", f"--input={tmp_path / 'empty.ts'}"], "no '@data' section"),
        ([f"--workdir={wd}", f"--input={one_channel}"], "the input has 1 channel per step, but the run was trained on 2"),
        ([f"--workdir={wd}", f"--input={tmp_path / 'absent.ts'}"], "no such file"),
        ([f"--workdir={wd}", f"--input={test_file}", f"--output={tmp_path / 'exists.csv'}"], "exists; pass --overwrite"),
    ]
    for args, message in cases:
        out = [] if any(a.startswith("--output") for a in args) else [f"--output={tmp_path / 'never.csv'}"]
        r = run_front_end("predict", *args, *out)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "never.csv").exists() and (tmp_path / "exists.csv").read_text() == "keep me"
    assert snapshot(wd) == before
    # Labels the run never saw: refused by name.
    wrong = tmp_path / "wrong.ts"
    wrong.write_text(open(test_file).read().replace(":flat\n", ":sideways\n").replace("up down flat", "up down sideways"))
    with pytest.raises(DataError, match="sideways never occurred in the run's training data"):
        load_run(wd).predict_file(str(wrong))


def test_a_reloaded_forecasting_ensemble_reproduces_its_forecast_and_forecasts_after_the_end(tmp_path):
    rng = np.random.default_rng(0)
    values = 50 + np.cumsum(rng.normal(0.3, 1.0, 40))
    problem = fr.Problem(["y"], [values], test_size=4, season=1, val_size=4,
                         source={"name": "csv", "column": "y", "id_column": None, "missing": "interpolate"})
    config = fr.RecipeConfig(hidden_size=4, input_multiples=(1.0, 1.5), seeds=1, epochs=2, patience=0,
                             min_steps_per_epoch=2, quantiles=(0.1, 0.5, 0.9))
    wd = tmp_path / "run"
    summary = fr.run(problem, config, str(wd), statistical=False, log=lambda _: None)
    run = load_run(str(wd))
    assert isinstance(run, ForecastRun) and len(run.members) == 2
    again = run.forecast(["y"], [values[:-4]])  # what the run forecast for its test span
    for k, q in enumerate(("0.1", "0.5", "0.9")):
        np.testing.assert_array_equal(again.values[0][:, k], np.array(summary["forecast_quantiles"][q]))
    # The front-end on the whole series: the 4 steps after its end, long format with the quantiles.
    (tmp_path / "y.csv").write_text("y\n" + "".join(f"{float(v)!r}\n" for v in values))
    out = tmp_path / "f.csv"
    r = run_front_end("predict", f"--workdir={wd}", f"--input={tmp_path / 'y.csv'}", f"--output={out}")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(row["id"], row["step"]) for row in rows] == [("y", str(h)) for h in range(1, 5)]
    after = run.forecast(["y"], [values])
    np.testing.assert_allclose([float(row["forecast"]) for row in rows], after.values[0][:, 1], rtol=1e-9)
    assert all(float(row["q0.1"]) <= float(row["q0.5"]) <= float(row["q0.9"]) for row in rows)
    assert (tmp_path / "f.png").is_file()
    with pytest.raises(DataError, match="series z was not in the run"):
        run.forecast(["z"], [values])


def test_a_run_without_a_record_says_so(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"best_epoch": 1}))
    with pytest.raises(CheckpointError, match="no inference.json"):
        load_run(str(tmp_path))


def test_export_front_end_writes_the_run_with_its_record_and_refuses_an_unknown_format(classifier_run, tmp_path):
    wd, test_file, _, _ = classifier_run
    out = tmp_path / "exported"
    r = run_front_end("export", f"--workdir={wd}", "--format=jax", f"--output={out}")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metadata"]["run"]["inputs"]["labels"] == {"down": 0, "flat": 1, "up": 2}
    run = load_run(wd)
    x, lengths, _, _ = archives.read_inputs(test_file)
    split = run.prepare(x, lengths)
    exported = jax.export.deserialize(bytearray((out / "sequence.jax").read_bytes()))
    np.testing.assert_allclose(np.asarray(exported.call(split.x, split.lengths)), run.predictor.outputs(split),
                               atol=1e-5, rtol=0)
    r = run_front_end("export", f"--workdir={wd}", "--format=tflite", f"--output={tmp_path / 'other'}")
    assert r.returncode == 2 and r.stderr.strip() == "error: --format must be one of jax, onnx, got 'tflite'"
    assert not (tmp_path / "other").exists()


def test_the_readme_block_runs_as_written(classifier_run):
    wd, test_file, _, _ = classifier_run
    block = next(b for b in re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
                 if "load_run" in b)
    x, lengths, _, _ = archives.read_inputs(test_file)
    run = load_run(wd)
    x_t = run.prepare(x[:1], lengths[:1]).x[:, 0]
    scope = {"x_NxTxD": x, "lengths_N": lengths, "x_t": x_t}
    exec(compile(block.replace('"runs/R"', repr(wd)), "README.md", "exec"), scope)  # noqa: S102
    assert scope["labels"] == run.predict(x, lengths) and scope["y_t"].shape == (1, 3)
