"""Exported models run without this package: ``jax.export`` artifacts in a fresh Python that has only
jax and what jax needs (flax and lstm_jax fail to import there), at batch sizes and lengths other
than the ones the inputs were described with, to 1e-5 of the model; ONNX graphs in ONNX Runtime.
The manifest says what the functions take; bad requests are one line and change nothing."""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import re
import subprocess
import sys
import textwrap

import harness
import jax
import numpy as np
import pytest
from flax import nnx

import lstm_jax
from lstm_jax.errors import ConfigError
from lstm_jax.inference.export import export_jax
from lstm_jax.nn.models import Classifier, Forecaster, ModelConfig, make_classifier

TOL = 1e-5
D = 3


def _models() -> dict[str, nnx.Module]:
    """Tiny models, one of each kind the exporter treats apart (widths shared, so that their
    initialisers compile once). Their layers keep the default impl (native C++ on the CPU), which the
    exports must not need and must not change."""
    conv = dict(conv_filters=(4,), conv_kernels=(3,))
    return {
        # 2 layers of different widths, 3 classes, pooling 'mean' (its step state adds sum and count)
        "clf": Classifier(D, ModelConfig(hidden_size=(4, 3), pooling="mean"), num_classes=3, rngs=nnx.Rngs(0)),
        "gru": Forecaster(D, ModelConfig(cell="gru", hidden_size=4), horizon=2, rngs=nnx.Rngs(1)),
        "bi": Classifier(D, ModelConfig(hidden_size=4, bidirectional=True), rngs=nnx.Rngs(2)),  # logits [B]
        "lstm_fcn": make_classifier(D, ModelConfig(hidden_size=4, architecture="lstm_fcn", **conv), nnx.Rngs(3),
                                    length=6, num_classes=3),
    }


def _inputs(B: int, T: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = np.full((B,), T, np.int32)
    lengths[0] = max(1, T - 3)  # one padded row
    return rng.normal(size=(B, T, D)).astype(np.float32), lengths


def _impls(model) -> list[str]:
    return [layer.impl for _, layer in nnx.iter_graph(model) if isinstance(layer, lstm_jax.LSTM)]


# -- a Python with jax alone ----------------------------------------------------------------------------

def _distribution_tops(name: str) -> set[str]:
    """The top-level files and folders a distribution installed (packages, modules, bundled libs)."""
    tops = set()
    for f in importlib.metadata.distribution(name).files or ():
        top = f.parts[0]
        if top not in ("..", "__pycache__") and not top.endswith((".dist-info", ".data")):
            tops.add(top)
    return tops


def jax_only_path(folder: pathlib.Path) -> pathlib.Path:
    """``folder`` filled with links to the installed packages jax needs and nothing else: jax and its
    requirements (jaxlib, numpy, ml_dtypes, opt_einsum, scipy), found from their metadata, and
    flatbuffers, which ``jax.export`` needs to (de)serialize although jax does not require it."""
    seen, todo = set(), ["jax", "flatbuffers"]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for req in importlib.metadata.requires(name) or ():
            if "extra ==" not in req:
                todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    folder.mkdir()
    for name in seen:
        dist = importlib.metadata.distribution(name)
        for top in _distribution_tops(name):
            (folder / top).symlink_to(dist.locate_file(top))
    return folder


CONSUMER = textwrap.dedent('''
    # -I -S: no site-packages, no user site, no PYTHON* variables, no script folder or cwd on sys.path.
    # -I ignores PYTHONPATH, so the folder of jax's packages comes in as an argument.
    import json, pathlib, sys
    sys.path.insert(0, sys.argv[1])
    for name in ("flax", "lstm_jax"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} imports in the consumer; the test would prove nothing")
    import jax, numpy as np

    work = pathlib.Path(sys.argv[2])
    for case in json.loads((work / "cases.json").read_text()):
        folder = work / case["export"]
        manifest = json.loads((folder / "manifest.json").read_text())
        fn = manifest["functions"][case["function"]]
        program = jax.export.deserialize(bytearray((folder / fn["file"]).read_bytes()))
        call = jax.jit(program.call)
        x, lengths = np.load(work / case["x"]), np.load(work / case["lengths"])
        if case["function"] == "sequence":
            y = call(x, lengths)
        else:  # the documented recipe: zeros of the manifest's state shapes, one call per step
            B = x.shape[0]
            state = [np.zeros([B if d == "B" else d for d in s["shape"]], s["dtype"]) for s in manifest["state"]]
            for t in range(x.shape[1]):
                y, *state = call(*state, x[:, t], t < lengths)
        np.save(work / (case["name"] + ".out.npy"), np.asarray(y))

    snippet = {}  # docs/export.md's consumer, as written, in this process's cwd, which holds my_export
    exec((work / "snippet.py").read_text(), snippet)
    np.save(work / "snippet.y.npy", np.asarray(snippet["y"]))
    np.save(work / "snippet.y_t.npy", np.asarray(snippet["y_t"]))
''')


def docs_consumer() -> str:
    """The first python block under "## Use it without lstm_jax" in docs/export.md."""
    text = (harness.REPO_ROOT / "docs" / "export.md").read_text()
    return text.split("## Use it without lstm_jax", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def consumer_runs(tmp_path_factory):
    """Every model exported once (symbolic B, and T where the model allows it), run in the jax-only
    Python on inputs of batch sizes and lengths of their own (two pairs for the streaming classifier),
    and the docs' snippet; returns (models, expected, got, folders)."""
    work = tmp_path_factory.mktemp("consumer")
    models = _models()
    folders = {name: export_jax(model, work / name, metadata={"model": name}) for name, model in models.items()}
    folders["clf_T9"] = export_jax(models["clf"], work / "clf_T9", length=9, step=False)
    # Symbolic B and T: any sizes run; the fixed-length exports take their T at any B.
    shapes = {"clf": [(2, 9), (5, 4)], "gru": [(4, 11)], "bi": [(3, 5)], "lstm_fcn": [(5, 6)], "clf_T9": [(1, 9)]}
    cases, expected = [], {}
    for name, sizes in shapes.items():
        model = models[name.split("_T")[0]]
        functions = json.loads((folders[name] / "manifest.json").read_text())["functions"]
        for k, (B, T) in enumerate(sizes):
            x, lengths = _inputs(B, T, seed=k)
            np.save(work / f"{name}{k}.x.npy", x)
            np.save(work / f"{name}{k}.lengths.npy", lengths)
            want = np.asarray(nnx.jit(lambda m, x, lengths: m(x, lengths))(model, x, lengths))
            for function in functions:
                case = f"{name}{k}.{function}"
                cases.append({"name": case, "export": name, "function": function,
                              "x": f"{name}{k}.x.npy", "lengths": f"{name}{k}.lengths.npy"})
                expected[case] = want
    (work / "cases.json").write_text(json.dumps(cases))
    (work / "consumer.py").write_text(CONSUMER)
    (work / "snippet.py").write_text(docs_consumer())
    pkgs = jax_only_path(work / "jax_only")
    cwd = work / "cwd"
    cwd.mkdir()
    export_jax(models["clf"], cwd / "my_export")
    zeros = np.zeros((4, 100, D), np.float32)  # what the snippet feeds, every row full
    expected["snippet.y"] = expected["snippet.y_t"] = np.asarray(nnx.jit(lambda m, x: m(x))(models["clf"], zeros))
    proc = subprocess.run([sys.executable, "-I", "-S", str(work / "consumer.py"), str(pkgs), str(work)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {case: np.load(work / f"{case}.out.npy") for case in expected if not case.startswith("snippet")}
    got.update({case: np.load(work / f"{case}.npy") for case in ("snippet.y", "snippet.y_t")})
    return models, expected, got, folders


@pytest.mark.slow  # compiles every model, starts a Python
def test_exported_programs_run_in_a_python_without_flax_or_lstm_jax(consumer_runs):
    models, expected, got, _ = consumer_runs
    assert set(got) == set(expected)
    for case, want in expected.items():
        assert got[case].shape == want.shape, case
        np.testing.assert_allclose(got[case], want, atol=TOL, rtol=0, err_msg=case)
    # The sequence of every model and the step of the two that stream; not the bidirectional's or LSTM-FCN's.
    assert {c.split(".")[1] for c in got if c.startswith(("clf0", "gru0"))} == {"sequence", "step"}
    assert not any(c.endswith(".step") for c in got if c.startswith(("bi", "lstm_fcn", "clf_T9")))
    # Exporting left the models' own layers on their impl.
    assert _impls(models["clf"]) == ["native", "native"] and _impls(models["bi"]) == ["native"] * 2


@pytest.mark.slow  # compiles every model, starts a Python
def test_the_manifest_describes_the_functions_and_the_model(consumer_runs):
    _, _, _, folders = consumer_runs
    m = json.loads((folders["clf"] / "manifest.json").read_text())
    assert m["format"] == "jax.export" and m["format_version"] == 1 and m["platforms"] == ["cpu", "cuda"]
    seq = m["functions"]["sequence"]
    assert seq["file"] == "sequence.jax"
    assert seq["inputs"] == [{"name": "x", "shape": ["B", "T", D], "dtype": "float32"},
                             {"name": "lengths", "shape": ["B"], "dtype": "int32"}]
    assert seq["outputs"] == [{"name": "logits", "shape": ["B", 3], "dtype": "float32"}]
    # Step: one [B, H] array per carry entry of each layer, then the running sum and count of pooling 'mean'.
    assert [(s["name"], s["shape"]) for s in m["state"]] == [
        ("carries.0.0", ["B", 4]), ("carries.0.1", ["B", 4]), ("carries.1.0", ["B", 3]), ("carries.1.1", ["B", 3]),
        ("count", ["B"]), ("sum", ["B", 3])]
    assert m["initial_state"] == "zeros"
    step = m["functions"]["step"]
    assert [i["name"] for i in step["inputs"]] == [s["name"] for s in m["state"]] + ["x", "valid"]
    assert [o["name"] for o in step["outputs"]] == ["logits"] + [f"new.{s['name']}" for s in m["state"]]
    assert m["model"]["kind"] == "classifier" and m["model"]["num_classes"] == 3 and m["model"]["in_features"] == D
    assert m["model"]["config"]["hidden_size"] == [4, 3] and m["metadata"] == {"model": "clf"}
    assert m["versions"]["jax"] == jax.__version__
    assert m["versions"]["lstm_jax"] == importlib.metadata.version("lstm_jax")
    # The program was lowered for both platforms, though this machine has no GPU.
    program = jax.export.deserialize(bytearray((folders["clf"] / "sequence.jax").read_bytes()))
    assert program.platforms == ("cpu", "cuda")

    fcn = json.loads((folders["lstm_fcn"] / "manifest.json").read_text())
    assert fcn["functions"]["sequence"]["inputs"][0]["shape"] == ["B", 6, D]  # built for one length
    assert "step" not in fcn["functions"] and "cannot stream" in fcn["step_unavailable"]
    bi = json.loads((folders["bi"] / "manifest.json").read_text())
    assert bi["functions"]["sequence"]["outputs"][0]["shape"] == ["B"] and "bidirectional" in bi["step_unavailable"]
    gru = json.loads((folders["gru"] / "manifest.json").read_text())
    assert gru["model"]["kind"] == "forecaster" and gru["model"]["horizon"] == 2
    assert [s["name"] for s in gru["state"]] == ["carries.0.0"]  # the GRU carries h alone
    fixed = json.loads((folders["clf_T9"] / "manifest.json").read_text())
    assert fixed["functions"]["sequence"]["inputs"][0]["shape"] == ["B", 9, D]


# -- bad requests: one line, nothing changed -----------------------------------------------------------

class HostCallbackCell(lstm_jax.LSTMCell):
    """A cell whose step calls back into Python: neither jax.export nor ONNX can carry it."""

    def update(self, carry, z_BxGH):
        z_BxGH = jax.pure_callback(lambda z: z, jax.ShapeDtypeStruct(z_BxGH.shape, z_BxGH.dtype), z_BxGH)
        return super().update(carry, z_BxGH)


def test_bad_requests_are_one_line_and_change_nothing(tmp_path):
    model = Classifier(D, ModelConfig(hidden_size=3), rngs=nnx.Rngs(0))
    done = export_jax(model, tmp_path / "done", step=False)
    before = {p.name: p.read_bytes() for p in done.iterdir()}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    bi = Classifier(D, ModelConfig(hidden_size=3, bidirectional=True), rngs=nnx.Rngs(0))
    fcn = make_classifier(D, ModelConfig(hidden_size=3, architecture="lstm_fcn", conv_filters=(4,), conv_kernels=(3,)),
                          nnx.Rngs(0), length=5)
    callback = Classifier(D, ModelConfig(cell=HostCallbackCell, hidden_size=3), rngs=nnx.Rngs(0))
    cases = [
        (dict(model=model, path=done), "already holds an export"),
        (dict(model=model, path=tmp_path / "other"), "other files"),
        (dict(model=model, path=tmp_path / "file"), "not a folder"),
        (dict(model=model, path=tmp_path / "a", platforms=("cpu", "gpu")), "platforms"),
        (dict(model=model, path=tmp_path / "b", metadata={"x": object()}), "JSON"),
        (dict(model=model, path=tmp_path / "c", length=0), "length"),
        (dict(model=fcn, path=tmp_path / "d", length=7), "built for series of length 5"),
        (dict(model=bi, path=tmp_path / "e", step=True), "bidirectional model"),
        (dict(model=fcn, path=tmp_path / "f", step=True), "cannot stream"),
        (dict(model=nnx.Linear(2, 2, rngs=nnx.Rngs(0)), path=tmp_path / "g"), "in_features"),
        (dict(model=lambda x, lengths: x, path=tmp_path / "h"), "Flax NNX module"),
        (dict(model=callback, path=tmp_path / "i", step=False), "jax.export cannot export this Classifier"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ConfigError, match=words) as err:
            export_jax(kwargs.pop("model"), kwargs.pop("path"), **kwargs)
        assert "\n" not in str(err.value), str(err.value)
    assert {p.name: p.read_bytes() for p in done.iterdir()} == before
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine" and (tmp_path / "file").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done", "file", "other"]  # no half-written folder
    # Replacing an export is asked for explicitly.
    export_jax(model, done, length=4, step=False, overwrite=True)
    assert json.loads((done / "manifest.json").read_text())["functions"]["sequence"]["inputs"][0]["shape"][1] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done", "file", "other"]


# -- ONNX ----------------------------------------------------------------------------------------------

@pytest.mark.slow  # jax2onnx loads all its plugins on first use (about 7 s here)
def test_onnx_graphs_match_the_model_in_onnx_runtime(tmp_path):
    pytest.importorskip("jax2onnx", reason="ONNX export needs the export extra: pip install 'lstm_jax[export]'")
    ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra")
    from lstm_jax.inference.onnx import export_onnx  # after the skip: it is the extra's one module

    models = _models()
    T = 6
    for name in ("clf", "bi", "lstm_fcn"):
        model = models[name]
        fixed = name == "bi"  # one export with a fixed T; the others keep T symbolic
        folder = export_onnx(model, tmp_path / name, length=T if fixed else None, metadata={"model": name})
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["format"] == "onnx" and manifest["versions"]["jax2onnx"]
        seq = ort.InferenceSession(str(folder / "sequence.onnx"), providers=["CPUExecutionProvider"])
        want_T = T if fixed or name == "lstm_fcn" else "T"  # 'lstm_fcn' is built for one length
        assert [i.name for i in seq.get_inputs()] == ["x", "lengths"] and seq.get_inputs()[0].shape == ["B", want_T, D]
        for B, steps in ((1, T), (4, T + 3)) if name == "clf" else ((3, T),):  # B (and T) are symbolic
            x, lengths = _inputs(B, steps, seed=B)
            want = np.asarray(model(x, lengths))
            (got,) = seq.run(None, {"x": x, "lengths": lengths})
            np.testing.assert_allclose(got, want, atol=TOL, rtol=0, err_msg=f"{name} B={B}")
        assert ("step" in manifest["functions"]) == (name == "clf")

    # The streaming step, from zeros, one call per step.
    model, folder = models["clf"], tmp_path / "clf"
    manifest = json.loads((folder / "manifest.json").read_text())
    step = ort.InferenceSession(str(folder / "step.onnx"), providers=["CPUExecutionProvider"])
    x, lengths = _inputs(3, 9, seed=5)  # a longer T than the sequence graph's: the step has no T
    state = {s["name"]: np.zeros([3 if d == "B" else d for d in s["shape"]], s["dtype"]) for s in manifest["state"]}
    for t in range(x.shape[1]):
        y, *new = step.run(None, {**state, "x": x[:, t], "valid": t < lengths})
        state = dict(zip(state, new))
    np.testing.assert_allclose(y, np.asarray(model(x, lengths)), atol=TOL, rtol=0)
    assert _impls(model) == ["native", "native"]

    # A model jax2onnx cannot convert (a cell that calls back into Python) is one line, nothing written
    # (here, beside the conversions above: loading jax2onnx's plugins is most of an ONNX test's time).
    callback = Classifier(D, ModelConfig(cell=HostCallbackCell, hidden_size=3), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="jax2onnx cannot export this Classifier's sequence function") as err:
        export_onnx(callback, tmp_path / "refused", length=4, step=False)
    assert "\n" not in str(err.value) and not (tmp_path / "refused").exists()


def test_onnx_without_the_extra_is_one_line(tmp_path, monkeypatch):
    from lstm_jax.inference.onnx import export_onnx  # imports jax2onnx only when called

    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # as if it were not installed
    model = Classifier(D, ModelConfig(hidden_size=3), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match=r"pip install 'lstm_jax\[export\]'") as err:
        export_onnx(model, tmp_path / "a", length=4)
    assert "\n" not in str(err.value) and not any(tmp_path.iterdir())
