"""experiments.classify in-process (K classes, the five-model comparison), its bad-input lines, and the
archive runner's tables: shards, merging, mean accuracy and mean rank."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from harness import run_front_end, write_three_class_ts

from experiments import classify, ucr
from experiments.configs import classify as classify_config
from experiments.train import train_and_evaluate
from lstm_jax.errors import ConfigError, DataError


def small(config, **fields):
    config.model.hidden_size = (4,)
    config.model.conv_filters = (4, 4, 4)
    config.data.min_epoch_rows = 0
    config.update({"epochs": 2, **fields})
    return config


def test_config_file_says_how_to_run_it():
    assert "python -m experiments.classify --dataset=ucr:ArrowHead --data_dir=../shared/data/multiclass" \
        in classify_config.__doc__
    assert "Expected" in classify_config.__doc__
    c = classify_config.get_config()
    assert c.experiment == "classify" and c.model.architecture == "lstm_fcn_time"


def test_classify_three_classes_in_process(tmp_path):
    root = write_three_class_ts(tmp_path / "data")
    config = small(classify_config.get_config(), dataset="ucr:Tri", data_dir=str(root))
    summary = train_and_evaluate(config, str(tmp_path / "wd"), log=lambda _: None)
    assert summary["num_classes"] == 3 and summary["labels"] == {"down": 0, "flat": 1, "up": 2}
    assert summary["dataset"]["norm"] == "channel" and summary["dataset"]["variable_length"]
    cm = np.array(summary["test_confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == 15
    # The summary's figures are those of the metrics module on the restored best model's predictions.
    assert summary["test_accuracy"] == pytest.approx(np.trace(cm) / 15)
    assert set(summary["test_per_class"]) == {"precision", "recall", "f1", "support", "roc_auc"}
    assert summary["baselines"]["1NN-DTW"] == 0.7
    for f in ("summary.json", "config.json", "metrics.jsonl", "learning_curves.png", "confusion_matrix.png"):
        assert os.path.isfile(tmp_path / "wd" / f), f
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "wd"))


@pytest.mark.slow  # three whole runs (about a minute on 2 quiet cores)
def test_compare_trains_each_model_and_chooses_on_validation(tmp_path):
    root = write_three_class_ts(tmp_path / "data")
    config = small(classify_config.get_config(), dataset="ucr:Tri", data_dir=str(root), epochs=1)
    config.compare = "fcn,lstm_fcn,lstm_fcn_time"
    summary = train_and_evaluate(config, str(tmp_path / "wd"), log=lambda _: None)
    assert set(summary["candidates"]) == {"fcn", "lstm_fcn", "lstm_fcn_time"}
    cands = {n: json.loads((tmp_path / "wd" / "candidates" / n / "summary.json").read_text()) for n in summary["candidates"]}
    assert {n: s["config"]["model"]["architecture"] for n, s in cands.items()} == \
        {"fcn": "fcn", "lstm_fcn": "lstm_fcn", "lstm_fcn_time": "lstm_fcn_time"}
    best = max(s["val_accuracy"] for s in cands.values())
    assert cands[summary["chosen"]]["val_accuracy"] == best and summary["chosen_by"] == "val_accuracy"
    assert summary["test_accuracy"] == cands[summary["chosen"]]["test_accuracy"]


def test_choose_breaks_ties_by_validation_loss():
    s = {"a": {"val_accuracy": 0.9, "val_loss": 0.5}, "b": {"val_accuracy": 0.9, "val_loss": 0.3},
         "c": {"val_accuracy": 0.8, "val_loss": 0.1}}
    assert classify.choose(s) == ("b", "val_accuracy")


def test_two_classes_keep_one_sigmoid_unit(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8, 1)).astype(np.float32)
    y = np.where(x[:, :4, 0].sum(1) > 0, "yes", "no")
    np.savez(tmp_path / "d.npz", X=x, y=y)
    config = small(classify_config.get_config(), dataset=f"npz:{tmp_path / 'd.npz'}")
    summary = train_and_evaluate(config, str(tmp_path / "wd"), log=lambda _: None)
    assert summary["num_classes"] == 2 and summary["labels"] == {"no": 0, "yes": 1}
    assert np.array(summary["test_confusion_matrix"]).shape == (2, 2)


def test_config_errors_name_the_field(tmp_path):
    root = write_three_class_ts(tmp_path / "data")
    for field, value, message in (("norm", "zscore", "data.norm must be one of"),
                                  ("class_weights", "inverse", "data.class_weights must be one of")):
        config = small(classify_config.get_config(), dataset="ucr:Tri", data_dir=str(root))
        config.data[field] = value
        with pytest.raises(ConfigError, match=message):
            classify.build(config)
    config = small(classify_config.get_config(), dataset="ucr:Tri", data_dir=str(root))
    config.compare = "fcn,transformer"
    with pytest.raises(ConfigError, match="compare: unknown model transformer"):
        classify.candidates(config)


def test_front_end_errors_are_one_line(tmp_path):
    """One class in train, and a binary run on three classes: one 'error:' line each, exit 2."""
    root = write_three_class_ts(tmp_path / "data")
    one = tmp_path / "data" / "One"
    one.mkdir()
    text = (root / "Tri" / "Tri_TRAIN.ts").read_text().splitlines()
    head = [ln for ln in text if ln.startswith("@")]
    rows = [ln for ln in text if not ln.startswith("@") and ln.endswith(":up")]
    (one / "One_TRAIN.ts").write_text("\n".join(head + rows) + "\n")
    (one / "One_TEST.ts").write_text((root / "Tri" / "Tri_TEST.ts").read_text())
    gap = tmp_path / "data" / "Gap"  # two classes, one value missing inside a training series
    gap.mkdir()
    values = [[f"{np.sin(i + t):.3f}" for t in range(8)] for i in range(10)]
    tsv = lambda: "".join(f"{i % 2}\t" + "\t".join(v) + "\n" for i, v in enumerate(values))
    (gap / "Gap_TEST.tsv").write_text(tsv())
    values[2][4] = "NaN"
    (gap / "Gap_TRAIN.tsv").write_text(tsv())
    cases = [("classify", ["--dataset=ucr:One", f"--data_dir={root}"], "One: the training data holds only class up; classification needs at least 2 classes"),
             ("binary", ["--dataset=ucr:Gap", f"--data_dir={root}", "--missing=error"],
              f"{gap / 'Gap_TRAIN.tsv'}, line 3: 1 missing value inside the series (missing='error'; 'interpolate' fills "
              "them linearly)"),
             ("binary", ["--dataset=ucr:Tri", f"--data_dir={root}"],
              "Tri has 3 classes (down, flat, up); a binary task needs exactly 2: use python -m experiments.classify "
              "for 3 classes")]
    for i, (exp, args, msg) in enumerate(cases):  # in process: the front-end's code, without a start-up each
        workdir = tmp_path / f"run{i}"
        proc = run_front_end(exp, *args, f"--workdir={workdir}")
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        assert proc.returncode == 2 and lines[-1] == f"error: {msg}", proc.stderr
        assert not workdir.exists()


def test_data_warnings_are_one_line_each(capsys):
    import warnings

    from experiments import common
    from lstm_jax.data import archives

    with common.data_warnings(archives.MissingValuesWarning):
        warnings.warn("Gap_TRAIN.tsv: 1 missing value inside 1 series filled", archives.MissingValuesWarning,
                      stacklevel=1)
    assert capsys.readouterr().err == "warning: Gap_TRAIN.tsv: 1 missing value inside 1 series filled\n"


# -- the archive runner's tables ------------------------------------------------------------------

def test_ranks_ties_and_missing():
    assert ucr.ranks([0.9, 0.8, 0.9, None, 0.7]) == [1.5, 3.0, 1.5, None, 4.0]


def test_shards_are_disjoint_and_cover_every_set():
    names = [f"S{i}" for i in range(11)]
    parts = [ucr.shard(names, k, 4) for k in range(4)]
    assert sorted(sum(parts, [])) == sorted(names) and max(map(len, parts)) - min(map(len, parts)) <= 1
    assert ucr.parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/2", "a/b", "1"):
        with pytest.raises(ConfigError, match="--shard must be k/n"):
            ucr.parse_shard(bad)


def _rows():
    return [
        {"dataset": "A", "acc": {"lstm": 0.5, "fcn": 0.9, "recipe": 0.9, "1NN-DTW": 0.7}, "chosen": "fcn", "wall_seconds": 3},
        {"dataset": "B", "acc": {"lstm": 0.8, "fcn": 0.6, "recipe": 0.8, "1NN-DTW": None}, "chosen": "lstm", "wall_seconds": 4},
    ]


def test_table_means_and_ranks():
    cols = ["lstm", "fcn", "recipe", "1NN-DTW"]
    s = ucr.summary_rows(_rows(), cols)
    assert s["lstm"]["mean"] == pytest.approx(0.65) and s["1NN-DTW"]["sets"] == 1
    # A: fcn and recipe tie for 1-2 (1.5), 1NN 3, lstm 4; B: lstm and recipe 1.5, fcn 3.
    assert s["lstm"]["mean_rank"] == pytest.approx((4 + 1.5) / 2)
    assert s["recipe"]["mean_rank"] == pytest.approx(1.5)
    md = ucr.table(_rows(), cols, extra=["chosen"])
    assert "| A | 0.500 | 0.900 | 0.900 | 0.700 | fcn |" in md
    assert "| **mean accuracy** (2 sets) | 0.650 | 0.750 | 0.850 | 0.700 (1 sets) |" in md
    assert "| **mean rank** | 2.75 | 2.25 | 1.50 | 3.00 |" in md
    csv_text = ucr.to_csv(_rows(), cols, extra=["chosen"])
    assert csv_text.splitlines()[0] == "dataset,lstm,fcn,recipe,1NN-DTW,chosen"
    assert csv_text.splitlines()[2] == "B,0.800000,0.600000,0.800000,,lstm"


def test_merge_joins_shards_and_refuses_overlaps(tmp_path):
    rows = _rows()
    base = {"command": "python -m experiments.ucr --experiment=classify", "date": "d", "columns": ["lstm"],
            "extra": ["chosen"], "compare": "lstm,fcn"}
    for k, r in enumerate(rows):
        (tmp_path / f"results-shard-{k}-of-2.json").write_text(json.dumps({**base, "shard": [k, 2], "rows": [r]}))
    ucr.merge_shards(str(tmp_path))
    merged = json.loads((tmp_path / "results.json").read_text())
    assert [r["dataset"] for r in merged["rows"]] == ["A", "B"]
    assert merged["columns"][:3] == ["lstm", "fcn", "recipe"]
    assert (tmp_path / "results.md").read_text().count("| A |") == 1 and (tmp_path / "results.csv").is_file()
    (tmp_path / "results-shard-1-of-2.json").write_text(json.dumps({**base, "shard": [1, 2], "rows": rows[:1]}))
    with pytest.raises(DataError, match="A is in both"):
        ucr.merge_shards(str(tmp_path))
    os.remove(tmp_path / "results-shard-1-of-2.json")
    with pytest.raises(DataError, match="shard 1 of 2 missing"):
        ucr.merge_shards(str(tmp_path))
