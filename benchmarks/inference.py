"""Inference speed on the CPU: one LSTM layer and a linear head, lstm_jax beside torch and ONNX Runtime.

    python -m benchmarks.inference                                   # dispatch, streaming step, whole sequences
    python -m benchmarks.inference --suite=deepbench                 # DeepBench's LSTM shapes that fit a small CPU
    python -m benchmarks.inference --rounds=2 --step_shapes=1x8x128 --seq_shapes=1x100x8x128 \\
        --out=benchmarks/cpu_inference                               # also writes .json and .md

The model is benchmarks.benchmark's: one LSTM layer (D -> H) and a linear head (H -> 1) on the last
output; in lstm_jax, ``Forecaster(D, ModelConfig(hidden_size=H))``. Every peer is called as a user
calls it to predict: a NumPy input in, a NumPy output out (torch under ``torch.inference_mode``), so
the conversions at the boundary are part of each time.

Sections (``--suite`` picks the shapes; ``--step_shapes``, ``--seq_shapes``, ``--train_shapes`` override):

- dispatch: a call that does no work, at each step shape's B and H: a jitted identity on a device
  array, a jitted function that takes ``step_fn``'s arguments and returns them (so its gap to
  lstm_jax:step_fn is the step's own work), one torch op, an ONNX ``Identity`` model in ONNX Runtime.
  The floor under every batch-1 time.
- step (``BxDxH``): one streaming step, the state fed back at every call: lstm_jax is
  ``Stream(model, B)``, ``y = stream(x_BxD)``; lstm_jax:step_fn is ``jax.jit(step_fn(model)[0])``
  called directly (the stream without its wrapper); lstm_jax:export, the step of ``export_jax``'s
  folder, deserialized and jitted as docs/export.md's consumer calls it; onnxruntime:lstm_jax, ONNX
  Runtime on ``export_onnx``'s step; torch ``nn.LSTM`` on one step with its (h, c),
  ``torch.compile`` of that, ONNX Runtime on torch's export of it.
- sequence (``BxTxDxH``): a whole sequence [B, T, D] -> [B, 1]: lstm_jax jitted (``impl='auto'``, the
  native kernels on a CPU; and ``lstm_jax:xla``, the XLA fast path), lstm_jax:export (``export_jax``
  as a user calls it: T symbolic, so the recurrence is a ``lax.scan``), onnxruntime:lstm_jax
  (``export_onnx``, T symbolic too: the ``lax.scan`` as an ONNX ``Loop``), torch eager,
  ``torch.compile``, ONNX Runtime on torch's export.
- train (``BxTxDxH``): benchmarks.benchmark's train step (forward, weight gradients, Adam) for
  lstm_jax (``impl='auto'``), lstm_jax:xla and torch.

Peers (``--impls``; each section runs those it has; those not installed, or failing here, are
skipped and listed): lstm_jax, lstm_jax:xla, lstm_jax:step_fn, lstm_jax:export,
onnxruntime:lstm_jax, torch, torch:compile, onnxruntime:torch (ONNX Runtime on torch's own ONNX
export, ``torch.onnx.export``: ONNX's fused LSTM operator). Every exported peer's first output is
checked against its model's (1e-4) and skipped if it differs. torch:compile turns on Dynamo's experimental ``allow_rnn``: without it (torch 2.13)
Dynamo refuses ``nn.LSTM`` and the compiled model runs eagerly; a compile that captures no graph
is skipped.

Timing is benchmarks.benchmark's: interleaved rounds, each peer timed right after an untimed run of
its own, the median over rounds. One difference: a sample runs the call n times back to back, n
chosen so that a sample lasts at least ``--sample_ms``, and the time per call is reported. A batch-1
step takes tens of microseconds, too short for one clock reading, and a streaming loop does run its
steps back to back. The first-call column is the time from the built model (or its export) to
its first output (tracing, compiling, deserializing, loading a session); the export column, the
time to write the export (jax2onnx loads its plugins on its first conversion, about 7 s here).

Threads: every peer gets the CPUs this process may use (narrow them with ``taskset -c 0``). XLA sizes
its CPU thread pool from them (and lstm_jax's native kernels split their work over that pool); this
module sets ``torch.set_num_threads`` and ONNX Runtime's ``intra_op_num_threads`` to the same
count. The record gives each as read back, XLA's as the threads its pool started, and the machine's
load average at the start and end: run it on a quiet machine. With other work on the cores every
peer slows, torch most: here, with the load average at 3 on 2 cores, one nn.LSTM step (B=1, H=32)
took 24 ms on 2 threads against 68 µs on 1, its threads waiting on each other.

DeepBench (Baidu; code/kernels/rnn_problems.h): its inference_server LSTM shapes with H = 256
(T=150), 512 and 1024 (T=25) at B = 1, 2, 4, and its training LSTM shapes with H = 512 and 1024, T=25,
at B = 16, 32, 64 (H >= 1536 and B=128 left out: minutes per shape on two cores). DeepBench's input
is H wide and cuDNN skips the input matmul there (CUDNN_SKIP_INPUT); our layers always apply W, so
here D = H and the GFLOP count has both matmuls, 2*B*T*4H*(D+H) forward. DeepBench times the forward
and the backward (data) pass; the train rows here time benchmarks.benchmark's whole training step.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import math
import os
import pathlib
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from benchmarks import benchmark as bm
from experiments import common
from lstm_jax.errors import ConfigError
from lstm_jax.inference.export import export_jax
from lstm_jax.inference.onnx import export_onnx
from lstm_jax.kernels import native
from lstm_jax.nn.layers import use_impl
from lstm_jax.nn.models import Forecaster, ModelConfig
from lstm_jax.nn.stream import Stream, step_fn

PEERS = ("lstm_jax", "lstm_jax:xla", "lstm_jax:step_fn", "lstm_jax:export", "onnxruntime:lstm_jax", "torch",
         "torch:compile", "onnxruntime:torch")
SUITES = {
    "latency": {"step": ["1x8x128", "1x8x512"],
                "sequence": ["1x100x8x128", "64x100x8x128", "1x100x8x512", "64x100x8x512"],
                "train": []},
    # DeepBench's inference_server LSTMs (H, T) at B = 1, 2, 4 and training LSTMs (H, T=25) at B = 16, 32, 64.
    "deepbench": {"step": [],
                  "sequence": [f"{B}x{T}x{H}x{H}" for H, T in ((256, 150), (512, 25), (1024, 25)) for B in (1, 2, 4)],
                  "train": [f"{B}x25x{H}x{H}" for H in (512, 1024) for B in (16, 32, 64)]},
}
SECTIONS = ("dispatch", "step", "sequence", "train")
FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_enum("suite", "latency", list(SUITES), "The shapes: latency (batch 1 and 64, H 128 and 512) "
                      "or deepbench (DeepBench's LSTM shapes that fit a small CPU).")
    flags.DEFINE_list("step_shapes", None, "Streaming-step shapes BxDxH (default: the suite's; '' for none).")
    flags.DEFINE_list("seq_shapes", None, "Whole-sequence shapes BxTxDxH (default: the suite's; '' for none).")
    flags.DEFINE_list("train_shapes", None, "Training-step shapes BxTxDxH (default: the suite's; '' for none).")
    flags.DEFINE_list("impls", list(PEERS), f"Peers, any of: {', '.join(PEERS)}.")
    flags.DEFINE_bool("dispatch", True, "Time the no-work calls at each step shape.")
    flags.DEFINE_integer("rounds", 15, "Timed rounds; every peer runs in each, interleaved.")
    flags.DEFINE_integer("warmup", 2, "Untimed samples of each peer before the rounds.")
    flags.DEFINE_float("sample_ms", 20.0, "A sample repeats a call until it lasts at least this long (0: one call).")
    flags.DEFINE_integer("peak_size", 0, "N of the N x N f32 matmul that sets the peak (0: 2048).")
    flags.DEFINE_string("out", None, "Path prefix: writes <out>.json and <out>.md (the tables are printed either way).")
    flags.DEFINE_string("note", "", "Free text recorded with the results (machine load, how the run was started).")


@dataclasses.dataclass
class Built:
    """One peer at one shape: ``call()`` runs it once (NumPy in, NumPy out), after its first call."""

    call: Callable[[], object]
    first_call_s: float
    path: str | None = None  # the LSTM implementation behind an lstm_jax peer
    export_s: float | None = None  # writing the exported model, before the first call
    threads: dict[str, int] = dataclasses.field(default_factory=dict)  # torch's, ONNX Runtime's, as read back


def parse_shape(text: str, section: str) -> bm.Shape:
    """``BxDxH`` for a step (T = 1), ``BxTxDxH`` otherwise."""
    if section != "step":
        return bm.Shape.parse(text)
    parts = text.lower().split("x")
    if len(parts) != 3:
        raise ConfigError(f"a step shape is BxDxH, three positive integers, got {text!r}")
    try:
        return bm.Shape.parse(f"{parts[0]}x1x{parts[1]}x{parts[2]}")
    except ConfigError:
        raise ConfigError(f"a step shape is BxDxH, three positive integers, got {text!r}") from None


def shape_label(shape: bm.Shape, section: str) -> str:
    return f"B={shape.B} D={shape.I} H={shape.H}" if section in ("step", "dispatch") else \
        f"B={shape.B} T={shape.T} D={shape.I} H={shape.H}"


def inputs(shape: bm.Shape) -> np.ndarray:
    """x [B, T, D] (a step's is [B, 1, D]), the same for every peer."""
    return np.random.default_rng(0).standard_normal((shape.B, shape.T, shape.I), np.float32)


def first_call(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ready(call: Callable[[], object], **kw) -> Built:
    """``call`` built, its first call made and timed."""
    return Built(call, first_call(call), **kw)


# -- lstm_jax -------------------------------------------------------------------------------------------

def jax_model(shape: bm.Shape, impl: str = "auto") -> Forecaster:
    model = Forecaster(shape.I, ModelConfig(hidden_size=shape.H), rngs=nnx.Rngs(0))
    return model if impl == "auto" else use_impl(model, impl)


def jax_sequence(impl: str):
    def build(shape: bm.Shape, threads: int) -> Built:
        model = jax_model(shape, impl)
        graphdef, state = nnx.split(model)
        forward = jax.jit(lambda state, x_BxTxD: nnx.merge(graphdef, state)(x_BxTxD))
        x = inputs(shape)

        def call():
            return np.asarray(forward(state, x))

        return ready(call, path=model.encoder.layers[0].call_impl(shape.B))
    return build


def jax_stream(shape: bm.Shape, threads: int) -> Built:
    """``Stream(model, B)``, as a user streams: ``y = stream(x_BxD)``."""
    stream = Stream(jax_model(shape), shape.B)
    x = inputs(shape)[:, 0]
    return ready(lambda: np.asarray(stream(x)))


def jax_step_call(shape: bm.Shape, step: Callable) -> Callable[[], np.ndarray]:
    """Calls ``step(params, state, x_BxD, None) -> (y, state)`` on ``step_fn``'s arguments, feeding the
    state back."""
    model = jax_model(shape)
    _, params = step_fn(model)
    state = {"now": model.init_state(shape.B)}
    x = inputs(shape)[:, 0]

    def call():
        y, state["now"] = step(params, state["now"], x, None)
        return np.asarray(y)

    return call


def jax_step_fn(shape: bm.Shape, threads: int) -> Built:
    """``jax.jit(step_fn(model)[0])`` called directly: the stream without its wrapper."""
    return ready(jax_step_call(shape, jax.jit(step_fn(jax_model(shape))[0])))


# -- lstm_jax's exports --------------------------------------------------------------------------------

def same_as(got: list[np.ndarray], want: list[np.ndarray], what: str) -> None:
    """A peer that computes something else is not measured: a skip, with the difference."""
    worst = max(float(np.max(np.abs(np.asarray(g) - np.asarray(w)))) for g, w in zip(got, want, strict=True))
    if worst > 1e-4:
        raise bm.Skip(f"{what}'s output is {worst:.2g} away from the model's")


def export(fmt: str, shape: bm.Shape, section: str) -> tuple[Forecaster, dict[str, bytes], dict, float]:
    """(model, the export's files by name, its manifest, seconds to export): ``export_jax`` or
    ``export_onnx`` as a user calls it (B and T symbolic), the step only for the step section."""
    model = jax_model(shape)
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp) / "export"
        t0 = time.perf_counter()
        try:
            if fmt == "jax":
                export_jax(model, folder, platforms=("cpu",), step=section == "step")
            else:
                export_onnx(model, folder, step=section == "step")
        except ConfigError as e:  # the exporter cannot run here (jax2onnx missing, ...): its one line
            raise bm.Skip(str(e)) from None
        seconds = time.perf_counter() - t0
        files = {f.name: f.read_bytes() for f in folder.iterdir()}
    return model, files, json.loads(files["manifest.json"]), seconds


def first_output(model: Forecaster, section: str, x: np.ndarray) -> np.ndarray:
    """The model's own output for ``x``: its sequence call, or its first step from the zero state."""
    if section == "step":
        return np.asarray(model.step(model.init_state(x.shape[0]), jnp.asarray(x))[0])
    return np.asarray(model(jnp.asarray(x)))


def step_state(manifest: dict, B: int) -> list[np.ndarray]:
    """The exported step's zero state, in call order."""
    return [np.zeros([B if d == "B" else d for d in s["shape"]], s["dtype"]) for s in manifest["state"]]


def jax_export(section: str):
    """The jax.export artifact, deserialized and jitted (as docs/export.md's consumer calls it)."""
    def build(shape: bm.Shape, threads: int) -> Built:
        model, files, manifest, export_s = export("jax", shape, section)
        t0 = time.perf_counter()
        program = jax.jit(jax.export.deserialize(bytearray(files[f"{section}.jax"])).call)
        x = inputs(shape)
        if section == "step":
            x, valid, state = x[:, 0], np.ones((shape.B,), bool), {"now": step_state(manifest, shape.B)}

            def call():
                y, *state["now"] = program(*state["now"], x, valid)
                return np.asarray(y)

            first_s = time.perf_counter() - t0 + first_call(lambda: program(*state["now"], x, valid)[0].block_until_ready())
            same_as([program(*state["now"], x, valid)[0]], [first_output(model, section, x)], "the exported step")
        else:
            lengths = np.full((shape.B,), shape.T, np.int32)

            def call():
                return np.asarray(program(x, lengths))

            first_s = time.perf_counter() - t0 + first_call(call)
            same_as([call()], [first_output(model, section, x)], "the exported sequence")
        return Built(call, first_s, path="scan" if section == "sequence" else None, export_s=export_s)
    return build


def jax_onnx(section: str):
    """ONNX Runtime on ``export_onnx``'s graph."""
    def build(shape: bm.Shape, threads: int) -> Built:
        model, files, manifest, export_s = export("onnx", shape, section)
        t0 = time.perf_counter()
        session = ort_session(files[f"{section}.onnx"], threads)
        x = inputs(shape)
        if section == "step":
            x, valid = x[:, 0], np.ones((shape.B,), bool)
            names = [s["name"] for s in manifest["state"]]
            state = {"now": dict(zip(names, step_state(manifest, shape.B), strict=True))}

            def run():
                return session.run(None, {**state["now"], "x": x, "valid": valid})

            def call():
                y, *new = run()
                state["now"] = dict(zip(names, new, strict=True))
                return y
        else:
            feed = {"x": x, "lengths": np.full((shape.B,), shape.T, np.int32)}

            def run():
                return session.run(None, feed)

            call = run
        first_s = time.perf_counter() - t0 + first_call(run)
        same_as([run()[0]], [first_output(model, section, x)], f"ONNX Runtime's {section}")
        return Built(call, first_s, path="scan" if section == "sequence" else None, export_s=export_s,
                     threads=ort_threads(session))
    return build


# -- torch ----------------------------------------------------------------------------------------------

def torch_module(threads: int):
    try:
        import torch
    except ImportError:
        raise bm.Skip("torch is not installed") from None
    torch.set_num_threads(threads)
    return torch


def torch_modules(shape: bm.Shape, threads: int):
    """(torch, sequence model x -> y, step model (x, h, c) -> (y, h, c)), sharing one LSTM and head."""
    torch = torch_module(threads)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(shape.I, shape.H, batch_first=True)
    head = torch.nn.Linear(shape.H, 1)

    class Sequence(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = lstm, head

        def forward(self, x_BxTxD):
            out, _ = self.lstm(x_BxTxD)
            return self.head(out[:, -1])

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = lstm, head

        def forward(self, x_Bx1xD, h_1xBxH, c_1xBxH):
            out, (h, c) = self.lstm(x_Bx1xD, (h_1xBxH, c_1xBxH))
            return self.head(out[:, 0]), h, c

    return torch, Sequence().eval(), Step().eval()


def torch_sequence(compiled: bool):
    def build(shape: bm.Shape, threads: int) -> Built:
        torch, model, _ = torch_modules(shape, threads)
        fn = compile_rnn(torch, model) if compiled else model
        x = inputs(shape)

        def call():
            with torch.inference_mode():
                return fn(torch.from_numpy(x)).numpy()

        return Built(call, first_compiled_call(torch, call, compiled), threads={"torch": torch.get_num_threads()},
                     path="allow_rnn" if compiled else None)
    return build


def torch_step(compiled: bool):
    def build(shape: bm.Shape, threads: int) -> Built:
        torch, _, model = torch_modules(shape, threads)
        fn = compile_rnn(torch, model) if compiled else model
        zero = torch.zeros(1, shape.B, shape.H)
        state = {"h": zero, "c": zero}
        x = inputs(shape)

        def call():
            with torch.inference_mode():
                y, state["h"], state["c"] = fn(torch.from_numpy(x), state["h"], state["c"])
                return y.numpy()

        return Built(call, first_compiled_call(torch, call, compiled), threads={"torch": torch.get_num_threads()},
                     path="allow_rnn" if compiled else None)
    return build


def compile_rnn(torch, model):
    """``torch.compile(model)`` with Dynamo's experimental RNN support on: without it, Dynamo refuses
    ``nn.LSTM`` ("Dynamo does not support RNN, GRU, or LSTM") and the whole call runs eagerly."""
    torch._dynamo.config.allow_rnn = True
    return torch.compile(model)


def first_compiled_call(torch, call: Callable[[], object], compiled: bool) -> float:
    """The first call's time. A torch.compile that fails here, or that captures no graph (so runs
    eagerly), is a skip, with its reason."""
    if not compiled:
        return first_call(call)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    try:
        seconds = first_call(call)
    except Exception as e:  # noqa: BLE001  dynamo and inductor raise many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise bm.Skip(f"torch.compile fails here: {type(e).__name__}: {first}") from None
    if torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs:
        raise bm.Skip("torch.compile captured no graph here (it would run eagerly)")
    return seconds


# -- ONNX Runtime ---------------------------------------------------------------------------------------

def ort_session(model_bytes: bytes, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads and one inter-op thread."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise bm.Skip("onnxruntime is not installed") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def torch_onnx(torch, model, args: tuple, input_names: list[str], output_names: list[str]) -> bytes:
    """torch's TorchScript ONNX export (the dynamo one needs onnxscript), to bytes."""
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():  # it is deprecated, and warns about batch sizes we keep fixed
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, buf, input_names=input_names, output_names=output_names, dynamo=False)
    except Exception as e:  # noqa: BLE001  an exporter that cannot run here is a skip
        raise bm.Skip(f"torch.onnx.export fails here: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return buf.getvalue()


def same_as_torch(got: list[np.ndarray], torch, model, args: tuple) -> None:
    """An exported model that computes something else is not measured: a skip, with the difference."""
    with torch.inference_mode():
        want = model(*args)
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    worst = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want, strict=True))
    if worst > 1e-4:
        raise bm.Skip(f"ONNX Runtime's output is {worst:.2g} away from torch's")


def ort_torch_sequence(shape: bm.Shape, threads: int) -> Built:
    torch, model, _ = torch_modules(shape, threads)
    x = inputs(shape)
    t0 = time.perf_counter()
    graph = torch_onnx(torch, model, (torch.from_numpy(x),), ["x"], ["y"])
    export_s, t0 = time.perf_counter() - t0, time.perf_counter()
    session = ort_session(graph, threads)

    def call():
        return session.run(None, {"x": x})[0]

    first_s = time.perf_counter() - t0 + first_call(call)
    same_as_torch([call()], torch, model, (torch.from_numpy(x),))
    return Built(call, first_s, export_s=export_s, threads=ort_threads(session))


def ort_threads(session) -> dict[str, int]:
    return {"onnxruntime_intra_op": session.get_session_options().intra_op_num_threads}


def ort_torch_step(shape: bm.Shape, threads: int) -> Built:
    torch, _, model = torch_modules(shape, threads)
    x = inputs(shape)
    zero = np.zeros((1, shape.B, shape.H), np.float32)
    t0 = time.perf_counter()
    args = (torch.from_numpy(x), torch.from_numpy(zero), torch.from_numpy(zero))
    graph = torch_onnx(torch, model, args, ["x", "h", "c"], ["y", "h_out", "c_out"])
    export_s, t0 = time.perf_counter() - t0, time.perf_counter()
    session = ort_session(graph, threads)
    first_s = time.perf_counter() - t0 + first_call(lambda: session.run(None, {"x": x, "h": zero, "c": zero}))
    same_as_torch(session.run(None, {"x": x, "h": zero, "c": zero}), torch, model, args)
    state = {"h": zero, "c": zero}

    def call():
        y, state["h"], state["c"] = session.run(None, {"x": x, "h": state["h"], "c": state["c"]})
        return y

    return Built(call, first_s, export_s=export_s, threads=ort_threads(session))


# -- the sections' peers --------------------------------------------------------------------------------

STEP = {"lstm_jax": jax_stream, "lstm_jax:step_fn": jax_step_fn, "lstm_jax:export": jax_export("step"),
        "onnxruntime:lstm_jax": jax_onnx("step"), "torch": torch_step(False), "torch:compile": torch_step(True),
        "onnxruntime:torch": ort_torch_step}
SEQUENCE = {"lstm_jax": jax_sequence("auto"), "lstm_jax:xla": jax_sequence("xla"), "lstm_jax:export": jax_export("sequence"),
            "onnxruntime:lstm_jax": jax_onnx("sequence"), "torch": torch_sequence(False),
            "torch:compile": torch_sequence(True), "onnxruntime:torch": ort_torch_sequence}


def torch_train(shape: bm.Shape, modes) -> bm.Runner:
    return bm.torch_impl(shape, modes, device="cpu")


# benchmarks.benchmark's runners; its lstm_jax:auto is a jitted train step of the layer with impl='auto'.
TRAIN = {"lstm_jax": bm.BUILDERS["lstm_jax:auto"], "lstm_jax:xla": bm.BUILDERS["lstm_jax:xla"], "torch": torch_train}


def dispatch_calls(shape: bm.Shape, threads: int, skipped: dict[str, str]) -> dict[str, Built]:
    """The no-work calls at a step shape (see the module docstring)."""
    out = {}
    x_dev = jnp.zeros((shape.B, shape.H), jnp.float32)
    identity = jax.jit(lambda x: x)
    out["jax: jit identity"] = ready(lambda: identity(x_dev).block_until_ready())

    x = inputs(shape)[:, 0]
    echo = jax.jit(lambda params, state, x_BxD, valid_B: (x_BxD[:, :1], state))
    echo_call = jax_step_call(shape, echo)
    out["jax: jit, the step's arguments"] = ready(echo_call)
    try:
        torch = torch_module(threads)
        t = torch.from_numpy(x)

        def torch_call():
            with torch.inference_mode():
                return (t + 1).numpy()

        out["torch: one op (x + 1)"] = ready(torch_call, threads={"torch": torch.get_num_threads()})
    except bm.Skip as e:
        skipped["dispatch: torch"] = str(e)
    try:
        session = ort_session(onnx_identity(shape.B, shape.I), threads)
        out["onnxruntime: Identity model"] = ready(lambda: session.run(None, {"x": x}), threads=ort_threads(session))
    except bm.Skip as e:
        skipped["dispatch: onnxruntime"] = str(e)
    return out


def onnx_identity(B: int, D: int) -> bytes:
    """An ONNX model whose one node is Identity on x [B, D]."""
    try:
        from onnx import TensorProto, helper
    except ImportError:
        raise bm.Skip("onnx is not installed") from None
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, D])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, D])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntimes of the last years all read
    return model.SerializeToString()


# -- measuring ------------------------------------------------------------------------------------------

def repeats(call: Callable[[], object], sample_s: float) -> int:
    """Calls per sample: enough for ``sample_s`` seconds, judged from the quickest of three calls
    after two untimed ones (a jitted call may trace again once its arguments become its own outputs)."""
    if sample_s <= 0:
        return 1
    call(), call()
    fastest = min(first_call(call) for _ in range(3))
    return max(1, min(100_000, math.ceil(sample_s / max(fastest, 1e-7))))


def looped(call: Callable[[], object], n: int) -> Callable[[], None]:
    def run():
        for _ in range(n):
            call()
    return run


def measure(section: str, shape: bm.Shape, built: dict[str, Built], rounds: int, warmup: int, sample_s: float,
            peak: float, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Times every peer at one shape, interleaved; one result row per peer."""
    reps = {name: repeats(b.call, sample_s) for name, b in built.items()}
    times = bm.time_interleaved({n: looped(b.call, reps[n]) for n, b in built.items()}, rounds, warmup)
    rows = []
    for name, ts in times.items():
        ms = 1e3 * np.asarray(ts) / reps[name]
        median = float(np.median(ms))
        gflop = 0.0 if section == "dispatch" else shape.gflop("forward")
        rows.append(row(section, shape, name, median, ms, rounds, reps[name], built[name].first_call_s, gflop, peak,
                        built[name].path, built[name].export_s))
        log(f"  {section:8s} {shape_label(shape, section):24s} {name:32s} {median:10.3f} ms")
    return rows


def row(section, shape, name, median, ms, rounds, reps, first_call_s, gflop, peak, path, export_s=None) -> dict:
    gflops = gflop / (median * 1e-3) if gflop else None
    return {"section": section, "shape": dataclasses.asdict(shape), "impl": name, "path": path,
            "median_ms": median, "p25_ms": float(np.percentile(ms, 25)), "p75_ms": float(np.percentile(ms, 75)),
            "rounds": rounds, "calls_per_sample": reps, "first_call_s": first_call_s, "export_s": export_s,
            "gflop": gflop or None,
            "gflops": gflops, "percent_of_matmul_peak": None if gflops is None else 100 * gflops / peak}


def measure_train(shape: bm.Shape, impls: list[str], threads: int, rounds: int, warmup: int, peak: float,
                  skipped: dict[str, str], seen: dict[str, set[int]], log: Callable[[str], None]) -> list[dict]:
    """benchmarks.benchmark's train step of each peer, timed as it times it."""
    runners = {}
    for name in impls:
        if name in TRAIN:
            try:
                if name == "torch":
                    seen.setdefault("torch", set()).add(torch_module(threads).get_num_threads())
                runners[name] = TRAIN[name](shape, ("train",))
            except bm.Skip as e:
                skipped[f"train: {name}"] = str(e)
    times = bm.time_interleaved({n: r.call["train"] for n, r in runners.items()}, rounds, warmup)
    rows = []
    for name, ts in times.items():
        ms = 1e3 * np.asarray(ts)
        median = float(np.median(ms))
        rows.append(row("train", shape, name, median, ms, rounds, 1, runners[name].compile_s["train"],
                        bm.model_gflop("lstm_jax:auto", shape, "train"), peak, None))
        log(f"  train    {shape_label(shape, 'train'):24s} {name:32s} {median:10.3f} ms")
    return rows


def xla_pool_threads() -> int | None:
    """Threads of XLA's CPU pool now running in this process (Linux), None where it cannot tell."""
    try:
        names = [open(f"/proc/self/task/{t}/comm").read() for t in os.listdir("/proc/self/task")]
    except OSError:
        return None
    return sum("XLAEigen" in n for n in names)


def thread_record(threads: int, seen: dict[str, set[int]]) -> dict[str, Any]:
    """Each runtime's thread count: XLA's pool as counted, the others as the peers read them back."""
    out: dict[str, Any] = {"cpus_this_process_may_use": threads, "xla_cpu_pool": xla_pool_threads(),
                           "lstm_jax_native": native.threads()}
    for key, values in seen.items():
        out[key] = sorted(values)[0] if len(values) == 1 else sorted(values)
    return out


def versions() -> dict[str, str]:
    out = bm.versions()
    for name in ("onnxruntime", "onnx"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out


def run_inference(shapes: dict[str, list[bm.Shape]], impls: list[str], dispatch: bool, rounds: int, warmup: int,
                  sample_s: float, peak_size: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    if jax.default_backend() != "cpu":
        raise ConfigError("benchmarks.inference compares CPU peers; run it with JAX_PLATFORMS=cpu")
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load_start = os.getloadavg()
    peak = bm.matmul_peak_gflops(peak_size or 2048)
    log(f"{bm.device_description()}; {threads} threads for every peer; f32 matmul peak {peak:.0f} GFLOP/s; "
        f"load average {load_start[0]:.2f}")
    results, skipped, seen = [], {}, {}
    for section in SECTIONS:
        for shape in shapes["step" if section == "dispatch" else section]:
            if section == "dispatch" and not dispatch:
                break
            if section == "train":
                results += measure_train(shape, impls, threads, rounds, warmup, peak, skipped, seen, log)
                continue
            if section == "dispatch":
                built = dispatch_calls(shape, threads, skipped)
            else:
                builders = STEP if section == "step" else SEQUENCE
                built = {}
                for name in impls:
                    if name in builders:
                        try:
                            built[name] = builders[name](shape, threads)
                        except bm.Skip as e:
                            skipped[f"{section}: {name}"] = str(e)
            for b in built.values():
                for key, n in b.threads.items():
                    seen.setdefault(key, set()).add(n)
            results += measure(section, shape, built, rounds, warmup, sample_s, peak, log)
    env = {k: os.environ[k] for k in ("GLIBC_TUNABLES", "XLA_FLAGS", "OMP_NUM_THREADS", "LSTM_JAX_NATIVE_THREADS")
           if k in os.environ}
    return {"device": bm.device_description(), "backend": jax.default_backend(), "versions": versions(),
            "threads": thread_record(threads, seen), "environment": env, "matmul_peak_gflops": peak,
            # 1-minute load averages: a busy machine slows every peer, torch's threads most (see the docstring)
            "load_average": {"start": load_start[0], "end": os.getloadavg()[0]},
            "matmul_peak_size": peak_size or 2048, "results": results, "skipped": skipped}


# -- the record -----------------------------------------------------------------------------------------

def digits(v: float) -> str:
    """Three significant digits, without exponents."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) >= 0.001 else f"{v:.1g}"


def markdown(report: dict[str, Any]) -> str:
    """One table per section and shape: each peer's time per call, its ratio to torch's, work rate."""
    th = report["threads"]
    lines = [f"`{report['command']}`", ""] + ([report["note"], ""] if report.get("note") else []) + [
        f"{report['device']}; jax {report['versions']['jax']}"
        + "".join(f", {k} {report['versions'][k]}" for k in ("torch", "onnxruntime") if k in report["versions"])
        + f". f32 matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s (same run).", "",
        "Threads: " + ", ".join(f"{k} {v}" for k, v in th.items()) + ". Load average (1 min) "
        f"{report['load_average']['start']:.2f} at the start, {report['load_average']['end']:.2f} at the end.", "",
        "Median per call over interleaved rounds (NumPy in, NumPy out; a sample repeats a short call). "
        "Model: one LSTM layer and a linear head on the last output.", ""]
    keys = list(dict.fromkeys((r["section"], json.dumps(r["shape"])) for r in report["results"]))
    for section, shape_json in keys:
        shape = bm.Shape(**json.loads(shape_json))
        rows = [r for r in report["results"] if r["section"] == section and json.dumps(r["shape"]) == shape_json]
        micro = section in ("dispatch", "step")
        unit = "µs" if micro else "ms"
        scale = 1e3 if micro else 1.0
        torch_ms = next((r["median_ms"] for r in rows if r["impl"] == "torch"), None)
        lines += [f"### {section}: {shape_label(shape, section)}", ""]
        head = ["peer", f"{unit} per call", f"p25–p75 {unit}"] + (["torch / this"] if torch_ms else [])
        if section != "dispatch":
            head += ["GFLOP/s", "% of matmul peak"]
        exports = any(r.get("export_s") is not None for r in rows)
        head += ["first call s"] + (["export s"] if exports else []) + ["calls per sample"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            name = r["impl"] + (f" ({r['path']})" if r.get("path") else "")
            cells = [name, digits(r["median_ms"] * scale), f"{digits(r['p25_ms'] * scale)}–{digits(r['p75_ms'] * scale)}"]
            if torch_ms:
                cells.append(f"{torch_ms / r['median_ms']:.2f}")
            if section != "dispatch":
                cells += [digits(r["gflops"]), digits(r["percent_of_matmul_peak"])]
            cells += ["—" if r["first_call_s"] is None else f"{r['first_call_s']:.2f}"]
            if exports:
                cells.append("—" if r.get("export_s") is None else f"{r['export_s']:.2f}")
            cells.append(str(r["calls_per_sample"]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if report["skipped"]:
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items()), ""]
    return "\n".join(lines)


def main(argv):
    shapes = {}
    for section in ("step", "sequence", "train"):
        given = getattr(FLAGS, {"step": "step_shapes", "sequence": "seq_shapes", "train": "train_shapes"}[section])
        texts = SUITES[FLAGS.suite][section] if given is None else [t for t in given if t]
        shapes[section] = [parse_shape(t, section) for t in texts]
    impls = list(dict.fromkeys(FLAGS.impls))
    unknown = [i for i in impls if i not in PEERS]
    if unknown:
        raise ConfigError(f"unknown --impls {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    if FLAGS.rounds < 1 or FLAGS.warmup < 0 or FLAGS.sample_ms < 0:
        raise ConfigError("--rounds must be >= 1, --warmup and --sample_ms >= 0")
    command = "python -m benchmarks.inference " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = run_inference(shapes, impls, FLAGS.dispatch, FLAGS.rounds, FLAGS.warmup, FLAGS.sample_ms * 1e-3,
                           FLAGS.peak_size)
    report = {"command": command.strip(), "date": datetime.date.today().isoformat(), "note": FLAGS.note,
              "suite": FLAGS.suite, **report}
    bm.write_record(FLAGS.out, report, markdown)


if __name__ == "__main__":
    common.run(main, define=define_flags)
