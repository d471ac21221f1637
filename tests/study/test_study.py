"""Studies: the search space, the study config, the engine on real storages, the front-end end to end."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import harness
import ml_collections
import pytest

optuna = pytest.importorskip("optuna")

from experiments import common  # noqa: E402  (after the skip: the study front-end needs Optuna)
from experiments import study as front  # noqa: E402
from experiments.configs.studies import quick  # noqa: E402
from lstm_jax.errors import ConfigError, NonFiniteError, UserError  # noqa: E402
from lstm_jax.study import configfile, engine, optuna_api  # noqa: E402
from lstm_jax.study.space import parse, parse_space  # noqa: E402
from lstm_jax.train.workdir import to_jsonable  # noqa: E402

QUICK = os.path.join(common.CONFIG_DIR, "studies", "quick.py")


def tiny(**fields) -> ml_collections.ConfigDict:
    """The quick study, shrunk: two variants, two trials each, two epochs."""
    c = quick.get_config()
    c.variants, c.trials_per_variant, c.base.epochs = "lstm,gru", 2, 2
    c.update(fields)
    return c


# -- the search space -------------------------------------------------------------------------------

def test_space_texts_become_optuna_distributions():
    lr = parse("learning_rate", "loguniform(1e-4, 1e-1)")
    assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-4, 1e-1)
    h = parse("hidden_size", "logint(16, 256)")
    assert isinstance(h, optuna.distributions.IntDistribution) and h.log and (h.low, h.high) == (16, 256)
    assert not parse("dropout", "uniform(0, 0.5)").log
    assert parse("num_layers", "int(1, 3)").high == 3
    assert parse("batch_size", "choice(16, 32, 64)").choices == (16, 32, 64)
    assert parse("pooling", "choice('last', 'mean')").choices == ("last", "mean")
    assert set(parse_space({"learning_rate": "uniform(0.1, 0.2)", "dropout": ""})) == {"learning_rate"}


@pytest.mark.parametrize("text, words", [
    ("uniform(0.5, 0.5)", "empty"), ("loguniform(1e-2, 1e-4)", "empty"), ("loguniform(0, 1)", "positive"),
    ("int(1.5, 3)", "whole"), ("normal(0, 1)", "not one of"), ("uniform(1)", "two numbers"),
    ("choice(1, 1)", "distinct"), ("uniform(a, 1)", "cannot read"), ("choice()", "distinct"),
])
def test_a_bad_space_text_is_one_line_naming_the_field(text, words):
    with pytest.raises(ConfigError, match=words) as e:
        parse("learning_rate", text)
    assert "space.learning_rate" in str(e.value) and "\n" not in str(e.value)


# -- the study config -------------------------------------------------------------------------------

def test_the_study_makes_each_trial_config_from_base_dataset_variant_and_params():
    s = front.Study(tiny(datasets="synthetic", dataset_fields=ml_collections.ConfigDict({"synthetic": "epochs=3"})),
                    "tiny")
    assert s.plan.pairs == [("synthetic", "lstm"), ("synthetic", "gru")]
    assert s.plan.metric == "val_accuracy" and s.plan.direction == "maximize" and s.plan.test_metric == "test_accuracy"
    c = s.trial_config("synthetic", "gru", {"learning_rate": 0.01, "hidden_size": 24}, seed=7)
    assert (c.model.cell, c.learning_rate, tuple(c.model.hidden_size), c.seed, c.epochs) == ("gru", 0.01, (24,), 7, 3)
    assert s.base.model.cell == "lstm" and s.base.epochs == 2  # the base is copied, never changed
    wide = front.Study(tiny(variants="lstm,wide", variant_fields=ml_collections.ConfigDict(
        {"wide": "model.hidden_size=(96,); model.cell='lstm'"})), "tiny")
    assert tuple(wide.trial_config("synthetic", "wide", {}, 0).model.hidden_size) == (96,)


@pytest.mark.parametrize("fields, words", [
    ({"variants": "lstm,grue"}, "variant 'grue' is not a cell"),
    ({"space": ml_collections.ConfigDict({"learning_rat": "uniform(0.1, 0.2)"})}, "space.learning_rat: not a field"),
    ({"space": ml_collections.ConfigDict({"learning_rate": "uniform(0.2, 0.1)"})}, "empty"),
    ({"pruner": "median", "seeds": 2}, "seeds=1"),
    ({"sampler": "grid"}, "sampler must be one of"),
    ({"metric": "test_accuracy"}, "validation metric"),
    ({"trials_per_variant": 0}, ">= 1"),
    ({"variant_fields": ml_collections.ConfigDict({"wide": "model.hidden_sise=(96,)"}), "variants": "lstm,wide"},
     "no field model.hidden_sise"),
    ({"dataset_fields": ml_collections.ConfigDict({"ECG200": "epochs=3"})}, "no dataset of the study"),
    ({"baseline": "peephole"}, "baseline 'peephole' is not one of the variants"),
])
def test_a_bad_study_config_is_one_line(fields, words):
    with pytest.raises(ConfigError, match=words) as e:
        front.Study(tiny(**fields), "tiny")
    assert "\n" not in str(e.value)


def test_a_config_file_written_back_gives_the_same_config_with_its_types():
    c = tiny().base
    c.learning_rate, c.model.hidden_size = 0.0123456789, (17,)
    namespace: dict = {}
    exec(compile(configfile.source(c, "doc"), "best.py", "exec"), namespace)
    again = namespace["get_config"]()
    assert again.to_dict() == c.to_dict()
    assert isinstance(again.model.hidden_size, tuple) and again.get_type("data_dir") is str
    again.data_dir = "somewhere"  # a placeholder stays fillable (--config.data_dir=...)
    with pytest.raises(TypeError):
        configfile.source(ml_collections.ConfigDict({"f": object()}), "doc")


# -- storage and folders ----------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_storage_errors_are_one_line_without_the_password():
    with pytest.raises(ConfigError, match="not a database URL"):
        optuna_api.storage("not a url", heartbeat_seconds=1)
    url = f"postgresql://me:s3cret-pw@127.0.0.1:{_closed_port()}/study"
    with pytest.raises(UserError, match="cannot open it") as e:
        optuna_api.storage(url, heartbeat_seconds=1)
    assert "s3cret-pw" not in str(e.value) and "***" in str(e.value) and "\n" not in str(e.value)
    assert optuna_api.redact(url) == url.replace("s3cret-pw", "***")


def test_a_folder_holding_another_study_or_a_run_is_refused_and_left_alone(tmp_path):
    front.open_folder(str(tmp_path / "s"), front.Study(tiny(), "tiny"), create=True)
    before = harness.snapshot(tmp_path / "s")
    with pytest.raises(ConfigError, match="holds another study"):
        front.open_folder(str(tmp_path / "s"), front.Study(tiny(trials_per_variant=3), "tiny"), create=True)
    assert harness.snapshot(tmp_path / "s") == before
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds a run"):
        front.open_folder(str(tmp_path / "run"), front.Study(tiny(), "tiny"), create=True)
    with pytest.raises(UserError, match="holds no study"):
        front.open_folder(str(tmp_path / "empty"), front.Study(tiny(), "tiny"), create=False)


def test_the_engine_fills_every_pair_and_counts_a_diverged_trial_as_failed(tmp_path):
    """The engine alone, with a stand-in trainer: the trials it asks for, each pair's own seeds, a
    non-finite run recorded failed with its reason and replaced, the best trial by validation."""
    s = front.Study(tiny(trials_per_variant=3), "engine")
    calls = []

    def run(tr: engine.TrialRun) -> dict:
        calls.append(tr)
        if tr.variant == "gru" and len([c for c in calls if c.variant == "gru"]) == 1:
            raise NonFiniteError("non-finite loss at step 3")
        os.makedirs(tr.workdir)
        return {"val_accuracy": tr.params["learning_rate"], "test_accuracy": 0.5}

    store = optuna_api.storage(f"sqlite:///{tmp_path}/s.db", heartbeat_seconds=1)
    ran = engine.work(s.plan, store, run, str(tmp_path), log=lambda _: None)
    studies = engine.open_studies(s.plan, store)
    records = engine.records(s.plan, studies)
    assert ran == 7 and engine.complete(s.plan, studies)
    failed = [r for r in records if r.state == "FAIL"]
    assert len(failed) == 1 and failed[0].variant == "gru" and "diverged" in failed[0].note
    for v in ("lstm", "gru"):
        done = [r for r in records if r.variant == v and r.state == "COMPLETE"]
        assert len(done) == 3 and all(r.test == 0.5 for r in done)
        best = engine.best_trials(s.plan, studies)[("synthetic", v)]
        assert best.value == max(r.value for r in done)
    assert sorted(c.seed for c in calls if c.variant == "lstm") == [0, 1, 2]  # seed = base seed + trial number
    assert len({c.workdir for c in calls}) == len(calls)


def test_stopping_and_starting_again_continues_the_study(tmp_path):
    s = front.Study(tiny(trials_per_variant=3), "restart")
    store = optuna_api.storage(f"sqlite:///{tmp_path}/s.db", heartbeat_seconds=1)

    def run(tr: engine.TrialRun) -> dict:
        return {"val_accuracy": tr.params["learning_rate"]}

    assert engine.work(s.plan, store, run, str(tmp_path), log=lambda _: None, max_trials=4) == 4
    assert not engine.complete(s.plan, engine.open_studies(s.plan, store))
    assert engine.work(s.plan, store, run, str(tmp_path), log=lambda _: None) == 2
    records = engine.records(s.plan, engine.open_studies(s.plan, store))
    assert sorted((r.variant, r.number) for r in records) == [(v, n) for v in ("gru", "lstm") for n in range(3)]


def test_a_pruner_stops_hopeless_trials_through_the_epoch_hook(tmp_path):
    """The median pruner, fed each epoch's validation metric by the Trainer's hook: after 5 trials,
    a trial whose curve runs below the median is stopped; pruned trials count as finished."""
    s = front.Study(tiny(variants="lstm", trials_per_variant=10, pruner="median"), "prune")
    epochs_seen = {}

    def run(tr: engine.TrialRun) -> dict:
        good = tr.seed < 5 or tr.seed % 2 == 0  # the first five set the median; odd ones after fall below it
        for epoch in range(1, 6):
            value = 0.5 + (0.08 if good else 0.01) * epoch
            epochs_seen[tr.seed] = epoch
            tr.on_epoch({"epoch": epoch, "val_accuracy": value})
        return {"val_accuracy": value, "test_accuracy": value}

    store = optuna_api.storage(f"sqlite:///{tmp_path}/s.db", heartbeat_seconds=1)
    engine.work(s.plan, store, run, str(tmp_path), log=lambda _: None)
    records = engine.records(s.plan, engine.open_studies(s.plan, store))
    pruned = sorted(r.number for r in records if r.state == "PRUNED")
    assert pruned == [5, 7, 9] and len(records) == 10
    assert all(epochs_seen[n] < 5 for n in pruned) and epochs_seen[6] == 5


def test_report_on_a_study_without_a_complete_trial_is_one_line(tmp_path):
    wd = str(tmp_path / "s")
    r = harness.run_front_end("study", f"--config={QUICK}", f"--workdir={wd}", "--report")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "holds no study" in r.stderr
    s = front.Study(quick.get_config(), "quick")
    front.open_folder(wd, s, create=True)
    engine.open_studies(s.plan, optuna_api.storage(f"sqlite:///{wd}/study.db", heartbeat_seconds=10))
    r = harness.run_front_end("study", f"--config={QUICK}", f"--workdir={wd}", "--report")
    assert r.returncode == 2 and "no complete trial" in r.stderr and r.stderr.strip().count("\n") == 0
    for flag, words in (("--config.variants=lstm,nope", "variant 'nope' is not a cell"),
                        ("--storage=postgresql://me:pw9@127.0.0.1:1/db", "cannot open it"),
                        ("--storage=nonsense", "not a database URL"),
                        ("--config.space.hidden_size=logint(64, 16)", "empty")):
        r = harness.run_front_end("study", f"--config={QUICK}", f"--workdir={tmp_path / 'other'}", flag)
        assert r.returncode == 2 and words in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
        assert "pw9" not in r.stdout + r.stderr
    assert not (tmp_path / "other").exists()


# -- end to end -------------------------------------------------------------------------------------

def test_quick_study_with_two_workers_reports_and_its_best_configs_train_again(tmp_path):
    wd = tmp_path / "quick"
    args = (f"--config={QUICK}", f"--workdir={wd}", "--workers=2", "--config.variants=lstm,gru",
            "--config.trials_per_variant=2", "--config.base.epochs=2")
    r = harness.run_front_end("study", *args)
    assert r.returncode == 0, r.stderr
    assert "study complete" in r.stdout and (wd / "report.md").exists()
    text = (wd / "report.md").read_text()
    for png in [line.split("(")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]:
        assert (wd / png).stat().st_size > 1000
    s = front.Study(tiny(), "quick")
    studies = engine.open_studies(s.plan, optuna_api.storage(f"sqlite:///{wd}/study.db", heartbeat_seconds=10))
    records = engine.records(s.plan, studies)
    assert sorted((r.variant, r.state) for r in records) == [("gru", "COMPLETE")] * 2 + [("lstm", "COMPLETE")] * 2
    workers = {t.user_attrs["worker"] for st in studies.values() for t in st.get_trials()
               if t.user_attrs.get("note") != engine.SURPLUS}
    assert len(workers) == 2  # two processes shared the work
    for (dataset, variant), best in engine.best_trials(s.plan, studies).items():
        trial_dir = wd / best.user_attrs["workdir"]
        for f in ("config.json", "summary.json", "metrics.jsonl", "checkpoints"):
            assert (trial_dir / f).exists(), f
        if variant != "gru":
            continue  # one rerun shows the command; each costs a process start-up
        # The command the best config's docstring gives trains the trial again, bit for bit.
        best_file = wd / "best" / f"{dataset}-{variant}.py"
        command = [line.strip() for line in best_file.read_text().splitlines() if "python -m experiments" in line][0]
        assert command.startswith("taskset -c 0 python -m experiments.binary")  # its worker had one core
        argv = [sys.executable if a == "python" else a for a in shlex.split(command)]
        rerun = subprocess.run([*argv, f"--workdir={tmp_path / ('again-' + variant)}", "--quiet"],
                               cwd=harness.REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        again = json.loads((tmp_path / f"again-{variant}" / "summary.json").read_text())
        trial = json.loads((trial_dir / "summary.json").read_text())
        assert again["val_accuracy"] == best.value and again["val_loss"] == trial["val_loss"]
        assert to_jsonable(_load(best_file)) == json.loads((trial_dir / "config.json").read_text())
    # The report again, alone; and the same command once more finds the study complete.
    again = harness.run_front_end("study", *args, "--report")
    assert again.returncode == 0 and "report:" in again.stdout
    more = harness.run_front_end("study", *args)
    assert more.returncode == 0 and "already complete" in more.stdout and "[w" not in more.stdout


def _load(path) -> ml_collections.ConfigDict:
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["get_config"]()


def _study_command(wd, url_env: dict, *extra: str) -> tuple[list[str], dict]:
    cmd = [sys.executable, "-m", "experiments.study", f"--config={QUICK}", f"--workdir={wd}", "--workers=1",
           "--config.variants=lstm", "--config.trials_per_variant=4", "--config.base.epochs=3",
           "--config.heartbeat_seconds=1", *extra]
    return cmd, {**os.environ, **url_env, "PYTHONUNBUFFERED": "1"}


def test_a_worker_killed_mid_trial_loses_nothing_on_postgres(postgres_url, tmp_path):
    """Two workers on one PostgreSQL study; one is killed (SIGKILL) during a trial and a third joins.
    The study ends with every requested trial complete, the killed trial failed and run again once
    with its own hyperparameters and seed, and no trial counted twice. The password reaches no file."""

    wd = tmp_path / "pg"
    password = postgres_url.split(":")[2].split("@")[0]
    cmd, env = _study_command(wd, {front.STORAGE_ENV: postgres_url})
    a = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    b = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    config = tiny(variants="lstm", trials_per_variant=4, heartbeat_seconds=1)
    config.base.epochs = 3
    s = front.Study(config, "quick")  # what the command line below makes of quick.py
    store = optuna_api.storage(postgres_url, heartbeat_seconds=1)
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline:
        time.sleep(0.2)
        names = optuna_api.study_names(store)
        for name in names:
            for t in optuna.load_study(study_name=name, storage=store).get_trials():
                # Training: its folder is named once its seed and hyperparameters are.
                if (t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(f":{a.pid}")
                        and "workdir" in t.user_attrs):
                    victim = (name, t.number, dict(t.params), t.user_attrs["seed"])
    assert victim is not None, "worker a never ran a trial"
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    c = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outs = [p.communicate(timeout=240)[0] for p in (b, c)]
    assert b.returncode == 0 and c.returncode == 0, outs
    studies = engine.open_studies(s.plan, store)
    assert engine.complete(s.plan, studies)
    killed = optuna.load_study(study_name=victim[0], storage=store).get_trials()
    by_number = {t.number: t for t in killed}
    assert by_number[victim[1]].state.name == "FAIL"
    retries = [t for t in killed if t.system_attrs.get("failed_trial") == victim[1]]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert dict(retries[0].params) == victim[2] and retries[0].user_attrs["seed"] == victim[3]
    for st in studies.values():
        done = [t for t in st.get_trials() if t.state.name == "COMPLETE"]
        assert len(done) == 4
        assert len({t.user_attrs["workdir"] for t in done}) == len(done)
    for root, _, files in os.walk(wd):
        for f in files:
            if f.endswith((".json", ".md", ".py", ".jsonl")):
                assert password not in open(os.path.join(root, f)).read(), f
    assert all(password not in o for o in outs)
