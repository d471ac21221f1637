"""One LSTM layer, side by side: lstm_jax's paths against Flax, torch and Keras.

    python -m benchmarks.benchmark                                  # the default grid, every peer installed
    python -m benchmarks.benchmark --shapes=64x100x8x128 --impls=lstm_jax:xla,flax_nnx --rounds=30
    python -m benchmarks.benchmark --out=benchmarks/cpu_one_layer  # also writes .json and .md

The model is one LSTM layer (I -> H) with a linear head on the last step's output, an MSE loss and
Adam. For each shape ``BxTxIxH``, implementation and mode (``train``: forward, backward and the Adam
update; ``forward``: outputs only) it reports the median wall time over interleaved rounds (every
implementation runs in turn in every round, so drifts in machine load hit all of them alike), the
compile time, the peak memory (XLA's buffer assignment for the JAX implementations, the CUDA
allocator's peak for torch on a GPU), GFLOP/s, and that as a percentage of a large f32 matmul
measured on the same device in the same run.

In a round each implementation runs twice in a row and only the second call is timed. XLA:CPU
frees a call's temporaries on another thread after the call returns (unmapping 300 MB takes
tens of ms), so a single timed call would pay for whatever ran before it: lstm_jax:native timed
right after lstm_jax:scan took 181 ms, and 150 ms right after itself. Timed after itself, each
implementation pays for its own cleanup, as in a training loop.

GFLOP counts only the LSTM's matmuls, the same for every implementation: forward 2*B*T*4H*(I+H);
a training step adds the weight gradients and the recurrent input gradient, 2*B*T*4H*(I+2H).

On CPU, every call of every implementation page-faults its fresh working memory, and what that
costs depends on the machine (a VM shared with other jobs pays much more). glibc's
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` cuts it for all of them; the report records the environment.

Implementations (``--impls``; peers that are not installed, or need a GPU, are skipped and listed):
lstm_jax:scan, lstm_jax:xla, lstm_jax:native (C++ kernels, CPU), lstm_jax:xla_bf16, lstm_jax:cudnn (the paths
behind ``lstm_jax.LSTM``; ``impl='auto'`` picks native on a CPU, cuDNN on a GPU),
flax_nnx (``nnx.RNN(nnx.OptimizedLSTMCell)``), flax_linen (``nn.RNN(nn.OptimizedLSTMCell)``), torch
(``torch.nn.LSTM``, CPU or CUDA), keras (Keras 3 ``LSTM`` on its JAX backend, ``train_on_batch``).

Models, each with ``impl='auto'`` and beside its torch peer (the table gives "its torch peer / this"):
lstm_jax:auto (one layer; torch), lstm_jax:stacked (``LSTMStack``, 2 layers of H; torch:stacked,
``nn.LSTM(num_layers=2)``), lstm_jax:bidirectional (torch:bidirectional, ``nn.LSTM(bidirectional=True)``),
lstm_jax:lengths (one layer, lengths uniform on [1, T], head on the last valid step; torch:packed,
``pack_padded_sequence``), and lstm_jax:cell=NAME for every registered cell (cell=gru beside torch:gru,
``nn.GRU``). Each cell's "ms per GFLOP / cell=lstm's" compares its time per matmul FLOP (its own
gate count; stacked and bidirectional count every layer) with the standard cell's.

    python -m benchmarks.benchmark --shapes=64x100x8x128 --modes=train --rounds=10 \
        --impls=lstm_jax:auto,torch,lstm_jax:stacked,torch:stacked,lstm_jax:bidirectional,torch:bidirectional,\
lstm_jax:lengths,torch:packed,lstm_jax:cell=gru,torch:gru
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

# A GPU shared with torch must not be grabbed whole by JAX up front; this also keeps memory honest.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("KERAS_BACKEND", "jax")
# Compile times are part of the report: no persistent compilation cache (experiments.common turns it on).
os.environ.setdefault("LSTM_JAX_COMPILATION_CACHE", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import flags  # noqa: E402
from flax import nnx  # noqa: E402

from experiments import common  # noqa: E402
from lstm_jax.errors import ConfigError  # noqa: E402
from lstm_jax.kernels import native  # noqa: E402
from lstm_jax.nn.cells import CELLS  # noqa: E402
from lstm_jax.nn.layers import LSTM, Bidirectional, LSTMStack  # noqa: E402

SINGLE_LAYER = ("lstm_jax:scan", "lstm_jax:xla", "lstm_jax:native", "lstm_jax:xla_bf16", "lstm_jax:cudnn",
                "flax_nnx", "flax_linen", "torch", "keras")
# The models, each beside its torch peer: impl='auto' as a user gets it.
MODELS = ("lstm_jax:auto", "lstm_jax:stacked", "torch:stacked", "lstm_jax:bidirectional", "torch:bidirectional",
          "lstm_jax:lengths", "torch:packed", "torch:gru")
CELL_IMPLS = tuple(f"lstm_jax:cell={name}" for name in sorted(CELLS))
ALL_IMPLS = SINGLE_LAYER + MODELS + CELL_IMPLS
TORCH_PEER = {"lstm_jax:auto": "torch", "lstm_jax:stacked": "torch:stacked",
              "lstm_jax:bidirectional": "torch:bidirectional", "lstm_jax:lengths": "torch:packed",
              "lstm_jax:cell=gru": "torch:gru"}
IMPL_ALIASES = {"lstm_jax:fast": "lstm_jax:xla", "lstm_jax:fast_bf16": "lstm_jax:xla_bf16"}  # the earlier names
DEFAULT_IMPLS = tuple(i for i in SINGLE_LAYER if i != "lstm_jax:xla_bf16")
MODES = ("train", "forward")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """This front-end's flags (not defined on import, so that other benchmarks can import this module)."""
    flags.DEFINE_list("shapes", ["64x100x8x128", "128x100x32x256"],
                      "Shapes BxTxIxH: batch, steps, input features, hidden units.")
    flags.DEFINE_list("impls", list(DEFAULT_IMPLS), f"Implementations, any of: {', '.join(ALL_IMPLS)}.")
    flags.DEFINE_list("modes", list(MODES), "What to time: train (forward, backward, Adam) and/or forward.")
    flags.DEFINE_integer("rounds", 10, "Timed rounds; every implementation runs in each, interleaved (an untimed call, "
                         "then a timed one).")
    flags.DEFINE_integer("warmup", 2, "Untimed calls of each implementation before the rounds.")
    flags.DEFINE_integer("peak_size", 0, "N of the N x N f32 matmul that sets the peak (0: 2048 on CPU, 8192 on GPU).")
    flags.DEFINE_enum("torch_device", "auto", ["auto", "cpu", "cuda"], "Where torch runs (auto: CUDA when available).")
    flags.DEFINE_string("out", None, "Path prefix: writes <out>.json and <out>.md (the table is printed either way).")
    flags.DEFINE_string("note", "", "Free text recorded with the results (machine load, how the run was started).")


@dataclasses.dataclass(frozen=True)
class Shape:
    B: int
    T: int
    I: int
    H: int

    @classmethod
    def parse(cls, text: str) -> Shape:
        try:
            B, T, I, H = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise ConfigError(f"a shape is BxTxIxH, four positive integers, got {text!r}") from None
        if min(B, T, I, H) < 1:
            raise ConfigError(f"a shape is BxTxIxH, four positive integers, got {text!r}")
        return cls(B, T, I, H)

    def __str__(self) -> str:
        return f"B={self.B} T={self.T} I={self.I} H={self.H}"

    def gflop(self, mode: str, gates: int = 4, extra: int = 0, dx: bool = False, I: int | None = None) -> float:
        """Matmul work of one layer's call (see the module docstring): ``gates`` blocks of H, ``extra``
        more multiply-adds per row and step (FGR's gate recurrence), ``dx`` the input gradient too."""
        B, T, H = self.B, self.T, self.H
        I = self.I if I is None else I
        G = gates * H
        fwd = 2 * B * T * (G * (I + H) + extra)
        bwd = 2 * B * T * (G * (I + 2 * H) + 2 * extra) + (2 * B * T * G * I if dx else 0)
        return 1e-9 * (fwd if mode == "forward" else fwd + bwd)


def model_gflop(impl: str, shape: Shape, mode: str) -> float:
    """Matmul GFLOP of one call of ``impl``'s model: stacked counts both layers (the second one's input
    gradient too), bidirectional both directions, a cell its own gates."""
    if impl in ("lstm_jax:stacked", "torch:stacked"):
        return shape.gflop(mode) + shape.gflop(mode, I=shape.H, dx=True)
    if impl in ("lstm_jax:bidirectional", "torch:bidirectional"):
        return 2 * shape.gflop(mode)
    if impl == "torch:gru":
        return shape.gflop(mode, gates=3)
    if impl.startswith("lstm_jax:cell="):
        cls = CELLS[impl.split("=", 1)[1]]
        extra = 9 * shape.H * shape.H if impl.endswith("=fgr") else 0  # [i f o]_{t-1} R, R [3H, 3H]
        return shape.gflop(mode, gates=len(cls.gates), extra=extra)
    return shape.gflop(mode)


@dataclasses.dataclass
class Runner:
    """One implementation at one shape: a callable per mode, and what was learnt while building it."""

    call: dict[str, Callable[[], None]]
    compile_s: dict[str, float | None]
    memory_bytes: dict[str, int | None]


class Skip(Exception):
    """This implementation cannot run here (not installed, needs a GPU, ...)."""


def data(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((shape.B, shape.T, shape.I), np.float32), rng.standard_normal(shape.B).astype(np.float32)


# -- JAX implementations: pure jitted steps over (params, opt_state) --------------------------------

def jax_runner(params, apply: Callable, shape: Shape, modes) -> Runner:
    """``apply(params, x_BxTxI) -> y_B``; the train step is value_and_grad + Adam under jax.jit."""
    tx = optax.adam(1e-3)
    x_np, y_np = data(shape)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)

    def train(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((apply(p, x) - y) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = {"params": params, "opt": tx.init(params)}
    call, compile_s, memory = {}, {}, {}
    for mode in modes:
        if mode == "train":
            lowered = jax.jit(train, donate_argnums=(0, 1)).lower(state["params"], state["opt"], x, y)
        else:
            lowered = jax.jit(apply).lower(state["params"], x)
        t0 = time.perf_counter()
        compiled = lowered.compile()
        compile_s[mode] = time.perf_counter() - t0
        memory[mode] = _xla_peak_bytes(compiled)
        if mode == "train":
            def step(compiled=compiled):
                state["params"], state["opt"], loss = compiled(state["params"], state["opt"], x, y)
                loss.block_until_ready()
        else:
            def step(compiled=compiled):
                compiled(state["params"], x).block_until_ready()
        call[mode] = step
    return Runner(call, compile_s, memory)


def _xla_peak_bytes(compiled) -> int | None:
    """Arguments, outputs and temporaries of XLA's buffer assignment (an upper bound on the live peak)."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


class _NNXModel(nnx.Module):
    def __init__(self, rnn, hidden: int, initial_carry: bool, *, rngs: nnx.Rngs):
        self.rnn = rnn
        self.head = nnx.Linear(hidden, 1, rngs=rngs)
        self.initial_carry = initial_carry
        self.hidden = hidden

    def __call__(self, x_BxTxI):
        if self.initial_carry:  # nnx.RNN would otherwise draw its zero carry from an rng stream
            z = jnp.zeros((x_BxTxI.shape[0], self.hidden), x_BxTxI.dtype)
            h = self.rnn(x_BxTxI, initial_carry=(z, z))
        else:
            h = self.rnn(x_BxTxI)
        return self.head(h[:, -1])[:, 0]


def nnx_runner(make_rnn: Callable[[nnx.Rngs], nnx.Module], shape: Shape, modes, initial_carry=False) -> Runner:
    rngs = nnx.Rngs(0)
    model = _NNXModel(make_rnn(rngs), shape.H, initial_carry, rngs=rngs)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return jax_runner(params, lambda p, x: nnx.merge(graphdef, p, rest)(x), shape, modes)


def lstm_jax(impl: str, dtype=None):
    def build(shape: Shape, modes) -> Runner:
        kw = {} if dtype is None else {"dtype": dtype}
        try:
            make = lambda rngs: LSTM(shape.I, shape.H, impl=impl, rngs=rngs, **kw)  # noqa: E731
            make(nnx.Rngs(0))
        except ConfigError as e:
            raise Skip(str(e)) from None
        return nnx_runner(make, shape, modes)
    return build


class _Model(nnx.Module):
    """An lstm_jax layer or stack and a linear head on the last step (on the last valid one with lengths)."""

    def __init__(self, rnn, lengths, *, rngs: nnx.Rngs):
        self.rnn = rnn
        self.head = nnx.Linear(rnn.out_features, 1, rngs=rngs)
        self.lengths = None if lengths is None else nnx.Variable(jnp.asarray(lengths))

    def __call__(self, x_BxTxI):
        if self.lengths is None:
            return self.head(self.rnn(x_BxTxI)[:, -1])[:, 0]
        _, carry = self.rnn(x_BxTxI, self.lengths[...], return_carry=True)
        return self.head(self.rnn.final_output(carry))[:, 0]


def lengths_for(shape: Shape) -> np.ndarray:
    """Varying lengths, uniform on [1, T] (the same for lstm_jax and torch's packed sequences)."""
    return np.random.default_rng(1).integers(1, shape.T + 1, shape.B).astype(np.int32)


def lstm_jax_model(kind: str, cell: str = "lstm"):
    def build(shape: Shape, modes) -> Runner:
        def make(rngs):
            if kind == "stacked":
                return LSTMStack(shape.I, shape.H, num_layers=2, cell=cell, rngs=rngs)
            if kind == "bidirectional":
                return Bidirectional.create(shape.I, shape.H, cell=cell, rngs=rngs)
            return LSTM(shape.I, shape.H, cell=cell, rngs=rngs)

        rngs = nnx.Rngs(0)
        model = _Model(make(rngs), lengths_for(shape) if kind == "lengths" else None, rngs=rngs)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        return jax_runner(params, lambda p, x: nnx.merge(graphdef, p, rest)(x), shape, modes)
    return build


def flax_nnx(shape: Shape, modes) -> Runner:
    return nnx_runner(lambda rngs: nnx.RNN(nnx.OptimizedLSTMCell(shape.I, shape.H, rngs=rngs)), shape, modes,
                      initial_carry=True)


def flax_linen(shape: Shape, modes) -> Runner:
    import flax.linen as nn

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x_BxTxI):
            h = nn.RNN(nn.OptimizedLSTMCell(shape.H))(x_BxTxI)
            return nn.Dense(1)(h[:, -1])[:, 0]

    model = Model()
    params = model.init(jax.random.key(0), jnp.zeros((shape.B, shape.T, shape.I)))
    return jax_runner(params, model.apply, shape, modes)


# -- peers outside JAX ----------------------------------------------------------------------------

def torch_impl(shape: Shape, modes, kind: str = "lstm", device: str | None = None) -> Runner:
    """torch's peer of ``kind``; ``device`` (auto, cpu, cuda) defaults to --torch_device."""
    try:
        import torch
    except ImportError:
        raise Skip("torch is not installed") from None
    want = device or FLAGS.torch_device
    device = "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise Skip("--torch_device=cuda but torch sees no CUDA device")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    if kind == "gru":
        lstm = torch.nn.GRU(shape.I, shape.H, batch_first=True).to(device)
    else:
        lstm = torch.nn.LSTM(shape.I, shape.H, batch_first=True, num_layers=2 if kind == "stacked" else 1,
                             bidirectional=kind == "bidirectional").to(device)
    head = torch.nn.Linear(shape.H * (2 if kind == "bidirectional" else 1), 1).to(device)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-3)
    x_np, y_np = data(shape)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    lengths = torch.from_numpy(lengths_for(shape).astype(np.int64))  # packed sequences want them on the CPU

    def forward():
        if kind == "packed":
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            _, (h_n, _) = lstm(packed)
            return head(h_n[-1])[:, 0]
        out, _ = lstm(x)
        return head(out[:, -1])[:, 0]

    def train():
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((forward() - y) ** 2)
        loss.backward()
        opt.step()
        sync()

    def infer():
        with torch.no_grad():
            forward()
        sync()

    memory: dict[str, int | None] = {}
    for mode, fn in (("train", train), ("forward", infer)):
        if mode in modes and device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            fn()
            memory[mode] = int(torch.cuda.max_memory_allocated())
        else:
            memory[mode] = None
    calls = {"train": train, "forward": infer}
    return Runner({m: calls[m] for m in modes}, {m: None for m in modes}, memory)


def keras_impl(shape: Shape, modes) -> Runner:
    try:
        import keras
    except ImportError:
        raise Skip("keras is not installed") from None
    if keras.backend.backend() != "jax":
        raise Skip(f"keras runs on its {keras.backend.backend()} backend here; set KERAS_BACKEND=jax")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((shape.T, shape.I)), keras.layers.LSTM(shape.H), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=True)
    x, y = data(shape)
    calls = {"train": lambda: model.train_on_batch(x, y[:, None]),
             "forward": lambda: np.asarray(model.predict_on_batch(x))}
    compile_s = {}
    for mode in modes:  # Keras compiles on the first call
        t0 = time.perf_counter()
        calls[mode]()
        compile_s[mode] = time.perf_counter() - t0
    return Runner({m: calls[m] for m in modes}, compile_s, {m: None for m in modes})


BUILDERS: dict[str, Callable[[Shape, tuple[str, ...]], Runner]] = {
    "lstm_jax:scan": lstm_jax("scan"),
    "lstm_jax:xla": lstm_jax("xla"),
    "lstm_jax:native": lstm_jax("native"),
    "lstm_jax:xla_bf16": lstm_jax("xla", jnp.bfloat16),
    "lstm_jax:cudnn": lstm_jax("cudnn"),
    "flax_nnx": flax_nnx,
    "flax_linen": flax_linen,
    "torch": torch_impl,
    "keras": keras_impl,
    "lstm_jax:auto": lstm_jax_model("one"),
    "lstm_jax:stacked": lstm_jax_model("stacked"),
    "lstm_jax:bidirectional": lstm_jax_model("bidirectional"),
    "lstm_jax:lengths": lstm_jax_model("lengths"),
    **{f"torch:{kind}": (lambda kind: lambda shape, modes: torch_impl(shape, modes, kind))(kind)  # noqa: B023
       for kind in ("stacked", "bidirectional", "packed", "gru")},
    **{f"lstm_jax:cell={name}": lstm_jax_model("one", name) for name in CELLS},
}


# -- measuring ------------------------------------------------------------------------------------

def matmul_peak_gflops(n: int, repeats: int = 7) -> float:
    """GFLOP/s of an n x n f32 matmul under jax.jit: the best the device does on dense work."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times)) * 1e-9


def time_interleaved(calls: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each callable: every round runs each in turn, an untimed call and then a
    timed one (so the timed call overlaps its own predecessor's cleanup, never another's)."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            fn()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def device_description() -> str:
    d = jax.devices()[0]
    if d.platform == "cpu":
        model = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        return f"CPU: {model}, {os.cpu_count()} cores"
    return f"{d.platform.upper()}: {d.device_kind}"


def versions() -> dict[str, str]:
    import flax

    out = {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
           "optax": optax.__version__}
    if native.built():
        out["lstm_jax.kernels.native"] = f"{native.isa()} kernel, {native.threads()} threads"
    for name in ("torch", "keras"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out


def run_benchmark(shapes: list[Shape], impls: list[str], modes: tuple[str, ...], rounds: int, warmup: int,
                  peak_size: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    on_cpu = jax.default_backend() == "cpu"
    peak = matmul_peak_gflops(peak_size or (2048 if on_cpu else 8192))
    log(f"{device_description()}; f32 matmul peak {peak:.0f} GFLOP/s")
    results, skipped = [], {}
    for shape in shapes:
        runners = {}
        for name in impls:
            try:
                runners[name] = BUILDERS[name](shape, modes)
            except Skip as e:
                skipped[name] = str(e)
        for mode in modes:
            times = time_interleaved({n: r.call[mode] for n, r in runners.items()}, rounds, warmup)
            for name, ts in times.items():
                ms = 1e3 * np.asarray(ts)
                median = float(np.median(ms))
                gflop = model_gflop(name, shape, mode)
                gflops = gflop / (median * 1e-3)
                results.append({
                    "shape": dataclasses.asdict(shape), "impl": name, "mode": mode,
                    "median_ms": median, "p25_ms": float(np.percentile(ms, 25)), "p75_ms": float(np.percentile(ms, 75)),
                    "rounds": rounds, "compile_s": runners[name].compile_s.get(mode),
                    "peak_memory_bytes": runners[name].memory_bytes.get(mode),
                    "gflop": gflop, "gflops": gflops, "ms_per_gflop": median / gflop,
                    "percent_of_matmul_peak": 100 * gflops / peak,
                })
                log(f"  {shape}  {mode:7s}  {name:20s} {median:9.2f} ms")
    env = {k: os.environ[k] for k in ("GLIBC_TUNABLES", "XLA_FLAGS", "OMP_NUM_THREADS", "MALLOC_MMAP_MAX_")
           if k in os.environ}
    return {"device": device_description(), "backend": jax.default_backend(), "versions": versions(),
            "environment": env,
            "matmul_peak_gflops": peak, "matmul_peak_size": peak_size or (2048 if on_cpu else 8192),
            "results": results, "skipped": skipped}


def markdown(report: dict[str, Any], command: str) -> str:
    """One table per shape: each implementation's times, its ratios to the peers, work rate and costs."""
    lines = [f"`{command}`", ""] + ([report["note"], ""] if report.get("note") else []) + [
             f"{report['device']}; jax {report['versions']['jax']}; "
             f"f32 matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s (same run). Median of "
             f"{report['results'][0]['rounds'] if report['results'] else 0} interleaved rounds.", ""]
    by_key = {(str(Shape(**r["shape"])), r["impl"], r["mode"]): r for r in report["results"]}
    shapes = list(dict.fromkeys(str(Shape(**r["shape"])) for r in report["results"]))
    impls = list(dict.fromkeys(r["impl"] for r in report["results"]))
    modes = list(dict.fromkeys(r["mode"] for r in report["results"]))
    peers = [p for p in ("flax_nnx", "torch") if p in impls]
    matched = any(TORCH_PEER.get(i) in impls for i in impls)
    cells = any(i.startswith("lstm_jax:cell=") for i in impls)

    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    for shape in shapes:
        lines += [f"### {shape}", ""]
        head = ["implementation"] + [f"{m} ms" for m in modes]
        head += [f"{p} time / this ({modes[0]})" for p in peers]
        head += ([f"its torch peer / this ({modes[0]})"] if matched else [])
        head += (["ms per GFLOP / cell=lstm's"] if cells else [])
        head += [f"GFLOP/s ({modes[0]})", "ms per GFLOP", "% of matmul peak", "compile s", "peak memory MB"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for impl in impls:
            rows = [by_key.get((shape, impl, m)) for m in modes]
            if rows[0] is None:
                continue
            r0 = rows[0]
            cells_ = [impl] + [fmt(r and r["median_ms"], ".1f") for r in rows]
            for p in peers:
                ref = by_key.get((shape, p, modes[0]))
                cells_.append(fmt(ref and ref["median_ms"] / r0["median_ms"], ".2f"))
            if matched:
                ref = by_key.get((shape, TORCH_PEER.get(impl), modes[0]))
                cells_.append(fmt(ref and ref["median_ms"] / r0["median_ms"], ".2f"))
            if cells:
                ref = by_key.get((shape, "lstm_jax:cell=lstm", modes[0]))
                per = r0["ms_per_gflop"] / ref["ms_per_gflop"] if ref and impl.startswith("lstm_jax:cell=") else None
                cells_.append(fmt(per, ".2f"))
            mem = r0["peak_memory_bytes"]
            mem_spec = ".1f" if mem and mem < 10 * 2**20 else ".0f"
            cells_ += [fmt(r0["gflops"], ".1f"), fmt(r0.get("ms_per_gflop"), ".2f"),
                       fmt(r0["percent_of_matmul_peak"], ".1f"), fmt(r0["compile_s"], ".2f"),
                       fmt(mem and mem / 2**20, mem_spec)]
            lines.append("| " + " | ".join(cells_) + " |")
        lines.append("")
    if report["skipped"]:
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items()), ""]
    return "\n".join(lines)


def main(argv):
    shapes = [Shape.parse(s) for s in FLAGS.shapes]
    impls = [IMPL_ALIASES.get(i, i) for i in FLAGS.impls]
    unknown = [i for i in impls if i not in BUILDERS]
    if unknown:
        raise ConfigError(f"unknown --impls {', '.join(unknown)}; choose from {', '.join(ALL_IMPLS)}")
    modes = tuple(m for m in MODES if m in FLAGS.modes)
    if not modes or set(FLAGS.modes) - set(MODES):
        raise ConfigError(f"--modes takes train and/or forward, got {','.join(FLAGS.modes)}")
    if FLAGS.rounds < 1 or FLAGS.warmup < 0:
        raise ConfigError("--rounds must be >= 1 and --warmup >= 0")
    command = "python -m benchmarks.benchmark " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = run_benchmark(shapes, list(dict.fromkeys(impls)), modes, FLAGS.rounds, FLAGS.warmup,
                           FLAGS.peak_size)
    report = {"command": command.strip(), "date": datetime.date.today().isoformat(), "note": FLAGS.note, **report}
    write_record(FLAGS.out, report, lambda r: markdown(r, r["command"]))


def write_record(out: str | None, report: dict[str, Any], to_markdown: Callable[[dict[str, Any]], str]) -> None:
    """Prints the report's table, and with ``out`` writes ``out.json`` (first, so that nothing after
    can lose the measurements) and ``out.md``."""
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out + ".json", "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    table = to_markdown(report)
    print("\n" + table)
    if out:
        with open(out + ".md", "w") as f:
            f.write(table + "\n")
        print(f"wrote {out}.json and {out}.md")


if __name__ == "__main__":
    common.run(main, define=define_flags)
