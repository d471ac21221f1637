"""Training: train/eval steps, the Checkpointer, and Trainer workdirs (resume, refusal, NaN)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from lstm_jax.data.dataset import Dataset, Split, batches
from lstm_jax.data.synthetic import make_order_task
from lstm_jax.errors import CheckpointError, ConfigError, NonFiniteError
from lstm_jax.nn.models import Classifier, Forecaster, ModelConfig
from lstm_jax.train.checkpoint import Checkpointer
from lstm_jax.train.config import TrainConfig
from lstm_jax.train.loop import Trainer, fit
from lstm_jax.train.steps import TrainState, eval_step, rng_streams, train_step
from lstm_jax.train.tasks import BinaryTask, RegressionTask

B, T, D = 6, 5, 2


def leaves_with_paths(tree):
    """[(path, array)], paths as 'a/0/b' so that nnx's int list keys match orbax's string ones."""
    def name(path):
        return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)

    return [(name(p), np.asarray(v)) for p, v in jax.tree_util.tree_leaves_with_path(tree)]


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_checkpoint(directory, step):
    """Reads one step with a plain orbax CheckpointManager, as any orbax user would."""
    manager = ocp.CheckpointManager(os.fspath(directory))
    try:
        return manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        )
    finally:
        manager.close()


# -- steps -----------------------------------------------------------------------------------------

VARIANTS = {
    "classifier_basic": (Classifier, ModelConfig(hidden_size=4), False),
    "classifier_stacked_dropout": (Classifier, ModelConfig(hidden_size=(4, 4), dropout=0.3), False),
    "classifier_bidirectional_lengths": (Classifier, ModelConfig(hidden_size=4, bidirectional=True), True),
    "forecaster_bidirectional": (Forecaster, ModelConfig(hidden_size=4, bidirectional=True), False),
    "forecaster_stacked_mean_lengths": (Forecaster, ModelConfig(hidden_size=(4, 4), dropout=0.2, pooling="mean"), True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_parameter_changes_after_one_train_step(variant):
    model_cls, config, with_lengths = VARIANTS[variant]
    rng = np.random.default_rng(0)
    if model_cls is Classifier:
        model, task = Classifier(D, config, rngs=nnx.Rngs(0)), BinaryTask()
        y = np.array([0, 1, 1, 0, 1, 0], np.float32)
    else:
        model, task = Forecaster(D, config, horizon=2, rngs=nnx.Rngs(0)), RegressionTask()
        y = rng.normal(size=(B, 2)).astype(np.float32)
    batch = {"x": rng.normal(size=(B, T, D)).astype(np.float32), "y": y, "weight": np.ones(B, np.float32)}
    if with_lengths:
        batch["lengths"] = np.array([5, 3, 1, 4, 5, 2])
    state = TrainState.create(model, optax.adam(1e-2))
    step = jax.jit(functools.partial(train_step, task=task))
    key = rng_streams(0)["dropout"]
    new, sums = step(state, batch, key)

    assert int(new.step) == 1
    assert bool(sums["finite"])
    assert float(sums["count"]) == B
    before, after = leaves_with_paths(state.params), leaves_with_paths(new.params)
    assert [p for p, _ in before] == [p for p, _ in after]
    # Adam moves every entry with a non-zero gradient by about the learning rate: all of them should.
    unchanged = {p: int(np.sum(a == b)) for (p, a), (_, b) in zip(before, after) if np.any(a == b)}
    assert not unchanged, f"entries that did not move: {unchanged}"

    if config.dropout > 0:
        # The dropout key is used: another key gives another update, the same key the same one.
        again, _ = step(state, batch, key)
        other, _ = step(state, batch, rng_streams(1)["dropout"])
        for (_, a), (_, b) in zip(after, leaves_with_paths(again.params)):
            np.testing.assert_array_equal(a, b)
        assert any(not np.array_equal(a, c) for (_, a), (_, c) in zip(after, leaves_with_paths(other.params)))


def test_loss_decreases_on_a_learnable_problem():
    """Predict a window's last value: a few Adam steps must cut the MSE by a large factor."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, T, D)).astype(np.float32)
    batch = {"x": x, "y": x[:, -1, :1].copy(), "weight": np.ones(32, np.float32)}
    task = RegressionTask()
    state = TrainState.create(Forecaster(D, ModelConfig(hidden_size=4), rngs=nnx.Rngs(0)), optax.adam(3e-2))
    step = jax.jit(functools.partial(train_step, task=task))
    evaluate = jax.jit(functools.partial(eval_step, task=task))

    def mse(state):
        sums = evaluate(state, batch)
        return float(sums["loss"] / sums["count"])

    first = mse(state)
    key = rng_streams(0)["dropout"]
    losses = []
    for _ in range(40):
        state, sums = step(state, batch, key)
        losses.append(float(sums["loss"] / sums["count"]))
    last = mse(state)
    assert last < 0.2 * first, (first, last)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_padded_batches_evaluate_like_one_full_batch():
    """``batches`` pads the last batch with weight-0 rows; summed eval sums equal one pass over the real rows."""
    split = make_order_task(10, length=T, features=D, seed=3)
    got = list(batches(split, 4))
    assert [b["x"].shape[0] for b in got] == [4, 4, 4]
    np.testing.assert_array_equal(got[-1]["weight"], [1, 1, 0, 0])
    real_x = np.concatenate([b["x"][b["weight"] > 0] for b in got])
    np.testing.assert_array_equal(real_x, split.x)

    task = BinaryTask()
    state = TrainState.create(Classifier(D, ModelConfig(hidden_size=4), rngs=nnx.Rngs(0)), optax.adam(1e-3))
    ev = jax.jit(functools.partial(eval_step, task=task))
    parts = [ev(state, b) for b in got]
    total = {k: sum(float(p[k]) for p in parts) for k in parts[0]}
    whole = ev(state, {"x": split.x, "y": split.y, "weight": np.ones(10, np.float32)})
    assert total["count"] == 10.0
    for k in ("loss", "accuracy"):
        np.testing.assert_allclose(total[k], float(whole[k]), rtol=1e-5)


# -- Checkpointer ---------------------------------------------------------------------------------

def _tree(seed):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)).astype(np.float32)),
        "nested": {"b": jnp.asarray(rng.normal(size=(4,)).astype(np.float32)), "n": jnp.asarray(seed, jnp.int32)},
    }


def _numeric_dirs(path):
    return sorted(int(n) for n in os.listdir(path) if n.isdigit())


@pytest.mark.parametrize(
    "mode,values,best",
    [("min", [0.5, 0.2, 0.4, 0.3], 2), ("max", [0.1, 0.9, 0.5, 0.6], 2), ("min", [0.5, 0.4, 0.3, 0.2], 4)],
)
def test_checkpointer_round_trip_keeps_latest_and_best(tmp_path, mode, values, best):
    directory = tmp_path / "ckpt"
    ck = Checkpointer(directory, metric="val_metric", mode=mode)
    for step, v in enumerate(values, start=1):
        ck.save(step, _tree(step), {"epoch": step, "val_metric": v})
    last = len(values)
    assert ck.latest_step() == last
    assert ck.best_step() == best
    assert sorted(ck.all_steps()) == sorted({best, last})
    # Older checkpoints are gone from disk too, not only from the manager's view.
    assert _numeric_dirs(directory) == sorted({best, last})
    ck.close()

    # A new Checkpointer (as a resumed run makes) sees the same steps and restores exact arrays.
    ck = Checkpointer(directory, metric="val_metric", mode=mode)
    assert ck.latest_step() == last and ck.best_step() == best
    for step in {best, last}:
        state, meta = ck.restore(step, _tree(0))
        assert meta == {"epoch": step, "val_metric": values[step - 1]}
        expected = _tree(step)
        assert jax.tree.structure(state) == jax.tree.structure(expected)
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(CheckpointError):
        ck.restore(99, _tree(0))
    with pytest.raises(ValueError):
        ck.save(10, _tree(10), {"epoch": 10})  # no metric to rank it by
    ck.close()


# -- Trainer --------------------------------------------------------------------------------------

MODEL_CONFIG = ModelConfig(hidden_size=(4, 4), dropout=0.25)  # dropout makes the RNG replay observable


def tiny_binary(nan=False):
    mk = lambda n, s: make_order_task(n, length=T, features=D, seed=s)
    train = mk(24, 1)
    if nan:
        train = Split(np.full_like(train.x, np.nan), train.y)
    return Dataset(train, mk(8, 2), mk(8, 3), info={"name": "tiny"})


def train_config(epochs, seed=0):
    return TrainConfig(epochs=epochs, batch_size=8, eval_batch_size=8, learning_rate=1e-2, seed=seed,
                       select="val_accuracy")


def make_trainer(workdir, epochs, *, resume=False, data=None, seed=0, params_seed=0, logs=None, config=None):
    model = Classifier(D, MODEL_CONFIG, rngs=nnx.Rngs(params_seed))
    return Trainer(model, BinaryTask(), data or tiny_binary(), config or train_config(epochs, seed), str(workdir),
                   resume=resume, log=(logs.append if logs is not None else lambda _: None))


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """A finished 2-epoch run (3 steps an epoch). Tests that change it work on a copy."""
    workdir = tmp_path_factory.mktemp("run") / "wd"
    trainer = make_trainer(workdir, 2)
    summary = trainer.fit()
    trainer.write_summary(summary)
    final_params = jax.device_get(trainer.state.params)
    trainer.close()
    return workdir, summary, final_params


def copy_run(two_epoch_run, tmp_path):
    dst = tmp_path / "wd"
    shutil.copytree(two_epoch_run[0], dst)
    return dst


def test_trainer_writes_metrics_summary_and_checkpoints(two_epoch_run):
    workdir, summary, _ = two_epoch_run
    records = read_metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [3, 6]
    with open(workdir / "summary.json") as f:
        on_disk = json.load(f)
    assert on_disk["epochs_trained"] == 2 and on_disk["steps"] == 6
    for key in ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "wall_seconds", "num_devices", "config"):
        assert key in on_disk
    # The summary evaluates the best checkpoint by val_accuracy: its value is the best epoch's.
    best = max(records, key=lambda r: r["val_accuracy"])
    assert on_disk["val_accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert records[on_disk["best_epoch"] - 1]["val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert 2 in _numeric_dirs(workdir / "checkpoints")


def test_trainer_resume_continues_and_matches_an_uninterrupted_run(two_epoch_run, tmp_path):
    workdir = copy_run(two_epoch_run, tmp_path)
    before = read_metrics(workdir)
    # A record past the checkpoint (as a crash could leave) must not survive the resume twice over.
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 3, "stale": True}) + "\n")

    logs = []
    # Different init weights: everything that matters must come from the checkpoint.
    resumed = make_trainer(workdir, 3, resume=True, params_seed=123, logs=logs)
    assert resumed.epoch == 2
    assert int(resumed.state.step) == 6
    assert any("resumed" in line for line in logs)
    summary = resumed.fit()
    resumed.close()

    records = read_metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert not any(r.get("stale") for r in records)
    assert records[:2] == before
    assert summary["epochs_trained"] == 3 and summary["steps"] == 9

    straight_dir = tmp_path / "straight"
    straight = make_trainer(straight_dir, 3)
    straight.fit()
    straight.close()
    reference = read_metrics(straight_dir)
    # Same shuffles and dropout masks: epoch 3 of the resumed run is epoch 3 of the uninterrupted one.
    for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert records[2][k] == pytest.approx(reference[2][k], rel=1e-5, abs=1e-6), k
    got = leaves_with_paths(read_checkpoint(workdir / "checkpoints", 3)["state"]["params"])
    want = leaves_with_paths(read_checkpoint(straight_dir / "checkpoints", 3)["state"]["params"])
    assert [p for p, _ in got] == [p for p, _ in want]
    for (p, x), (_, y) in zip(got, want):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=p)


def test_trainer_refuses_used_workdir_without_resume(two_epoch_run, tmp_path):
    workdir = copy_run(two_epoch_run, tmp_path)
    snapshot = {p: open(p, "rb").read() for p in (workdir / "metrics.jsonl", workdir / "summary.json")}
    ckpts = _numeric_dirs(workdir / "checkpoints")
    with pytest.raises(CheckpointError, match="resume"):
        make_trainer(workdir, 2)
    for p, content in snapshot.items():
        assert open(p, "rb").read() == content
    assert _numeric_dirs(workdir / "checkpoints") == ckpts

    with pytest.raises(CheckpointError, match="no run to resume"):
        make_trainer(tmp_path / "empty", 2, resume=True)
    # A resume with another configuration is refused, naming the field; only epochs may change.
    with pytest.raises(ConfigError, match=r"train\.seed is 1 but .* used 0"):
        make_trainer(workdir, 3, resume=True, seed=1)
    with pytest.raises(ConfigError, match=r"train\.learning_rate"):
        make_trainer(workdir, 3, resume=True, config=dataclasses.replace(train_config(3), learning_rate=0.5))
    for p, content in snapshot.items():
        assert open(p, "rb").read() == content


def test_trainer_checkpoint_is_readable_by_plain_orbax(two_epoch_run):
    workdir, summary, final_params = two_epoch_run
    manager = ocp.CheckpointManager(os.fspath(workdir / "checkpoints"))
    assert manager.latest_step() == 2
    best = summary["best_epoch"]
    assert best in manager.all_steps()
    manager.close()
    out = read_checkpoint(workdir / "checkpoints", best)
    assert out["meta"]["epoch"] == best
    assert int(out["state"]["step"]) == 3 * best
    # After fit the trainer holds the best checkpoint's parameters: plain orbax must read the same.
    got, want = leaves_with_paths(out["state"]["params"]), leaves_with_paths(final_params)
    assert [p for p, _ in got] == [p for p, _ in want]
    for (p, a), (_, b) in zip(got, want):
        np.testing.assert_array_equal(a, b, err_msg=p)


def test_nan_after_resume_names_the_global_step_and_keeps_the_checkpoint(two_epoch_run, tmp_path):
    workdir = copy_run(two_epoch_run, tmp_path)
    trainer = make_trainer(workdir, 3, resume=True, data=tiny_binary(nan=True))
    with pytest.raises(NonFiniteError, match=r"step 7 \(epoch 3\)"):
        trainer.fit()
    trainer.close()
    assert [r["epoch"] for r in read_metrics(workdir)] == [1, 2]
    assert max(_numeric_dirs(workdir / "checkpoints")) == 2


def test_fit_leaves_the_best_weights_in_the_callers_model(tmp_path):
    """The model passed in is trained in place: its own predictions give the summary's test accuracy."""
    data = tiny_binary()
    model = Classifier(D, MODEL_CONFIG, rngs=nnx.Rngs(0))
    before = leaves_with_paths(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    summary = fit(model, BinaryTask(), data, train_config(3), str(tmp_path / "wd"), log=lambda _: None)
    after = leaves_with_paths(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert any(not np.array_equal(a, b) for (_, a), (_, b) in zip(before, after))
    logits = np.asarray(model(jnp.asarray(data.test.x)))
    accuracy = float(np.mean((logits > 0) == (data.test.y > 0.5)))
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)
    # The weights are the best checkpoint's, as plain orbax reads them.
    best = leaves_with_paths(read_checkpoint(tmp_path / "wd" / "checkpoints", summary["best_epoch"])["state"]["params"])
    assert [p for p, _ in best] == [p for p, _ in after]
    for (p, a), (_, b) in zip(best, after):
        np.testing.assert_array_equal(a, b, err_msg=p)


def test_select_last_scores_the_last_epoch_whatever_validation_says(tmp_path):
    """select='last' keeps and scores the final weights: the summary's validation figures and the
    caller's model are the last epoch's, whatever validation said of earlier ones."""
    config = dataclasses.replace(train_config(4), select="last")
    model = Classifier(D, MODEL_CONFIG, rngs=nnx.Rngs(0))
    summary = fit(model, BinaryTask(), tiny_binary(), config, str(tmp_path / "wd"), log=lambda _: None)
    records = read_metrics(tmp_path / "wd")
    assert summary["best_epoch"] == 4 and summary["selected_by"] == "last"
    assert summary["val_loss"] == pytest.approx(records[-1]["val_loss"], rel=1e-6)
    last = leaves_with_paths(read_checkpoint(tmp_path / "wd" / "checkpoints", 4)["state"]["params"])
    after = leaves_with_paths(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    for (p, a), (_, b) in zip(last, after):
        np.testing.assert_array_equal(a, b, err_msg=p)
    with pytest.raises(ConfigError, match="patience"):
        dataclasses.replace(config, patience=2)
    with pytest.raises(ConfigError, match="'last'"):
        dataclasses.replace(config, select="accuracy")


def test_tensorboard_events_hold_one_point_per_epoch(two_epoch_run):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    workdir, summary, _ = two_epoch_run
    ea = event_accumulator.EventAccumulator(str(workdir))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for tag in ("train/loss", "val/loss", "train/accuracy", "val/accuracy", "learning_rate", "steps_per_second"):
        assert tag in tags, tags
        assert [e.step for e in ea.Scalars(tag)] == [1, 2]
    records = read_metrics(workdir)
    assert [e.value for e in ea.Scalars("val/loss")] == pytest.approx([r["val_loss"] for r in records], rel=1e-6)
    assert [e.value for e in ea.Scalars("learning_rate")] == pytest.approx([1e-2, 1e-2])
    assert ea.Scalars("hparams/test_accuracy")[0].value == pytest.approx(summary["test_accuracy"], rel=1e-6)


def test_a_file_as_workdir_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(CheckpointError, match="is a file"):
        make_trainer(path, 1)
    with pytest.raises(CheckpointError, match="cannot be created"):
        make_trainer(path / "run", 1)
    assert path.read_text() == "keep me"


def test_profile_steps_write_a_trace(tmp_path):
    config = dataclasses.replace(train_config(1), profile_steps=2)
    summary = fit(Classifier(D, MODEL_CONFIG, rngs=nnx.Rngs(0)), BinaryTask(), tiny_binary(), config,
                  str(tmp_path / "wd"), log=lambda _: None)
    assert summary["steps"] == 3
    traces = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "wd" / "plugins" / "profile") for f in fs]
    assert any(t.endswith(".xplane.pb") for t in traces), traces


def test_on_epoch_sees_each_epoch_record_and_can_stop_training(tmp_path):
    """The loop's one hook: called once per epoch with the record metrics.jsonl keeps; an exception
    it raises (a pruner's) ends training after that epoch's checkpoint, and propagates."""
    seen = []
    model = Classifier(D, MODEL_CONFIG, rngs=nnx.Rngs(0))
    trainer = Trainer(model, BinaryTask(), tiny_binary(), train_config(3), str(tmp_path / "all"),
                      log=lambda _: None, on_epoch=seen.append)
    trainer.fit()
    trainer.close()
    assert seen == read_metrics(tmp_path / "all")
    assert [r["epoch"] for r in seen] == [1, 2, 3]

    class Stop(Exception):
        pass

    def stop_at_two(record):
        if record["epoch"] == 2:
            raise Stop

    model = Classifier(D, MODEL_CONFIG, rngs=nnx.Rngs(0))
    trainer = Trainer(model, BinaryTask(), tiny_binary(), train_config(3), str(tmp_path / "stopped"),
                      log=lambda _: None, on_epoch=stop_at_two)
    with pytest.raises(Stop):
        trainer.fit()
    trainer.close()
    assert [r["epoch"] for r in read_metrics(tmp_path / "stopped")] == [1, 2]
    assert 2 in _numeric_dirs(tmp_path / "stopped" / "checkpoints")
