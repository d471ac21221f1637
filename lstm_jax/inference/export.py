"""A model as programs that run without this package or Flax: ``jax.export`` artifacts (here) and ONNX
(:mod:`lstm_jax.inference.onnx`, which shares this module's plan and folder).

An export is a folder; docs/export.md shows a consumer in about ten lines of jax and numpy::

    path/
      manifest.json   every function's inputs and outputs (names, shapes, dtypes), the step's state
                      layout and initial value, versions, the model's class and config, your metadata
      sequence.jax    (x [B, T, D] float32, lengths [B] int32) -> the model's output
      step.jax        (state..., x [B, D] float32, valid [B] bool) -> (output, state...); only for
                      models that stream (forward LSTM models), see ``model.step``

``.onnx`` files take the place of ``.jax`` ones in an ONNX export. The weights are constants inside
each program. ``B`` is symbolic; ``T`` is too unless the model is built for one length (LSTM-FCN
with its dimension shuffle) or the caller fixes it (``length=``). ``lengths`` is always an input:
rows are valid on ``[0, lengths[b])``, so full rows pass ``T``. The output is what the model gives:
a classifier's logits [B] (2 classes) or [B, K], a forecaster's [B, horizon]. The step's state is a
flat list of float arrays [B, width] named in the manifest, zeros at the start of every sequence.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstm_jax.errors import ConfigError, UserError
from lstm_jax.nn.layers import LSTM, Bidirectional, LSTMStack, use_impl
from lstm_jax.nn.models import LSTMFCN, Classifier, Forecaster
from lstm_jax.nn.stream import step_fn
from lstm_jax.train.workdir import to_jsonable

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output: ``shape`` holds ints and the symbolic names "B" (batch) and "T" (time)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclasses.dataclass(frozen=True)
class Program:
    """A pure function of positional arrays (the weights closed over), and what it takes and gives."""

    fn: Callable
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What an exporter needs from a model: the whole-sequence program, the step program (None when
    the model cannot stream; ``step_error`` says why), the step's state entries and the model's
    description for the manifest."""

    sequence: Program
    step: Program | None
    step_error: str | None
    state: tuple[TensorSpec, ...]
    model: dict[str, Any]


def infer_in_features(model: nnx.Module) -> int | None:
    """D of the models this package builds (Classifier, Forecaster, LSTMFCN); None for others."""
    if isinstance(model, LSTMFCN):
        return model.convs[0].in_features
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, LSTMStack):
        first = encoder.layers[0]
        return (first.forward if isinstance(first, Bidirectional) else first).in_features
    return None


def fixed_length(model: nnx.Module) -> int | None:
    """The one series length a model is built for (LSTM-FCN with the dimension shuffle), else None."""
    return model.length if isinstance(model, LSTMFCN) and model.shuffle else None


def describe(model: nnx.Module, in_features: int) -> dict[str, Any]:
    """The manifest's "model" entry: the class, and for this package's models the fields of
    ``nn.models.ModelSpec`` (kind, config, in_features, num_classes, length, horizon), which rebuild it."""
    info: dict[str, Any] = {"class": type(model).__name__, "in_features": in_features}
    if isinstance(model, (Classifier, LSTMFCN)):
        info.update(kind="classifier", num_classes=model.num_classes, length=getattr(model, "length", None))
    elif isinstance(model, Forecaster):
        info.update(kind="forecaster", horizon=model.head.out_features)
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        # A cell given as a class (not a registered name) is recorded by its name.
        info["config"] = json.loads(json.dumps(to_jsonable(config), default=lambda v: getattr(v, "__name__", repr(v))))
    return info


def output_name(model: nnx.Module) -> str:
    if isinstance(model, Forecaster):
        return "forecast"
    return "logits" if isinstance(model, (Classifier, LSTMFCN)) else "y"


def inference_clone(model: nnx.Module, impl: str) -> nnx.Module:
    """A copy of ``model`` whose LSTM layers run on ``impl`` ('scan' or 'portable'); ``model`` keeps its own.

    ``remat`` only changes how gradients are computed, so it is dropped (the scan path refuses it).
    """
    clone = nnx.clone(model)
    for _, layer in nnx.iter_graph(clone):
        if isinstance(layer, LSTM):
            layer.remat = False
    return use_impl(clone, impl)


def sequence_program(model: nnx.Module, in_features: int, length: int | None, impl: str) -> Program:
    """``(x [B, T, D] float32, lengths [B] int32) -> model(x, lengths)`` on a clone running ``impl``."""
    graphdef, params = nnx.split(inference_clone(model, impl))

    def sequence(x_BxTxD, lengths_B):
        return nnx.merge(graphdef, params)(x_BxTxD, lengths_B)

    T = "T" if length is None else length
    inputs = (TensorSpec("x", ("B", T, in_features), "float32"), TensorSpec("lengths", ("B",), "int32"))
    return Program(sequence, inputs, (output_name(model),))


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def step_program(model: nnx.Module, in_features: int) -> tuple[Program, tuple[TensorSpec, ...]]:
    """``(state..., x [B, D] float32, valid [B] bool) -> (output, state...)``, from ``nn.stream.step_fn``.

    The state pytree of ``model.init_state`` is flattened in ``jax.tree`` order; each entry is named
    by its path ("carries.0.1": layer 0's second carry array). Raises the stream API's ConfigError
    for a model that cannot stream, and ConfigError for one whose initial state is not zeros.
    """
    if not (callable(getattr(model, "init_state", None)) and callable(getattr(model, "step", None))):
        raise ConfigError(f"a {type(model).__name__} has no init_state/step, so it has no step to export")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(model.init_state(1))
    if any(np.any(np.asarray(leaf)) for _, leaf in leaves):
        raise ConfigError(f"this {type(model).__name__}'s initial state is not zeros; an exported step "
                          f"starts every sequence from zeros")
    state = tuple(TensorSpec(".".join(_key_name(k) for k in path), ("B", *leaf.shape[1:]), str(leaf.dtype))
                  for path, leaf in leaves)
    fn, params = step_fn(inference_clone(model, "portable"))
    n = len(state)

    def step(*args):
        y, new = fn(params, jax.tree.unflatten(treedef, args[:n]), args[n], args[n + 1])
        return (y, *jax.tree.leaves(new))

    inputs = (*state, TensorSpec("x", ("B", in_features), "float32"), TensorSpec("valid", ("B",), "bool"))
    outputs = (output_name(model), *(f"new.{s.name}" for s in state))
    return Program(step, inputs, outputs), state


def plan(model: nnx.Module, *, length: int | None = None, impl: str = "scan", step: bool | None = None,
         in_features: int | None = None) -> Plan:
    """Checks the request and builds both programs (nothing is traced yet).

    ``length``: None for a symbolic T (the model's own length for LSTM-FCN with the dimension
    shuffle), or a fixed T. ``impl``: how the sequence's LSTM layers run ('scan', or 'portable' for
    the XLA fast path where the cell has one). ``step``: None exports the step when the model
    streams, True requires it (raising the stream API's ConfigError when it cannot), False skips it.
    """
    if not isinstance(model, nnx.Module) or not callable(model):
        raise ConfigError(f"export takes a model (a callable Flax NNX module), got a {type(model).__name__}")
    D = infer_in_features(model) if in_features is None else in_features
    if D is None:
        raise ConfigError(f"cannot tell the input width of a {type(model).__name__}; pass in_features=D")
    if D < 1:
        raise ConfigError(f"in_features must be >= 1, got {D}")
    fixed = fixed_length(model)
    if fixed is not None and length not in (None, fixed):
        raise ConfigError(f"this LSTM-FCN was built for series of length {fixed}; it exports with that T, not {length}")
    length = fixed if fixed is not None else length
    if length is not None and length < 1:
        raise ConfigError(f"length must be >= 1 (or None for any T), got {length}")
    step_prog, state, step_error = None, (), None
    if step is not False:
        try:
            step_prog, state = step_program(model, D)
        except ConfigError as e:
            if step:
                raise
            step_error = str(e)
    return Plan(sequence_program(model, D, length, impl), step_prog, step_error, state, describe(model, D))


def versions(*packages: str) -> dict[str, str | None]:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def manifest(plan_: Plan, fmt: str, functions: dict[str, dict[str, Any]], metadata: dict | None,
             extra: dict[str, Any], packages: Sequence[str]) -> dict[str, Any]:
    """The manifest.json of an export; ``functions`` maps "sequence"/"step" to file, inputs, outputs."""
    out: dict[str, Any] = {"format": fmt, "format_version": FORMAT_VERSION, **extra, "functions": functions}
    if plan_.step is not None:
        out["state"] = [s.to_json() for s in plan_.state]
        out["initial_state"] = "zeros"
    else:
        out["step_unavailable"] = plan_.step_error
    out["model"] = plan_.model
    out["versions"] = versions("lstm_jax", *packages)
    out["metadata"] = metadata if metadata is not None else {}
    return out


def check_metadata(metadata: dict | None) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise ConfigError(f"metadata must be a dict, got a {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"metadata must be JSON-able (str keys; str, numbers, lists, dicts): {e}") from None


def check_destination(path: str | os.PathLike, overwrite: bool) -> pathlib.Path:
    """Refuses to replace anything but an earlier export (a folder with a manifest), and that only
    with ``overwrite``; before any work, so that a refused call changes nothing."""
    path = pathlib.Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise ConfigError(f"{path} exists and is not a folder; choose another path for the export")
        if any(path.iterdir()):
            if not (path / MANIFEST).is_file():
                raise ConfigError(f"{path} is a folder with other files; an export goes to a new or empty folder")
            if not overwrite:
                raise ConfigError(f"{path} already holds an export; pass overwrite=True to replace it")
    return path


def write_folder(path: pathlib.Path, files: dict[str, bytes], manifest_: dict[str, Any]) -> pathlib.Path:
    """Writes ``files`` and the manifest into a new folder beside ``path``, then moves it into place,
    so that a reader never sees half an export."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp"))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(manifest_, indent=2) + "\n")
        old = None
        if path.exists():
            old = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old"))
            os.replace(path, old / "export")
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def refusal(model: nnx.Module, what: str, e: Exception, converter: str) -> ConfigError:
    """The one-line ConfigError for a program the converter cannot take."""
    kind = type(model).__name__
    text = str(e)
    if isinstance(e, jax.errors.InconclusiveDimensionOperation):
        return ConfigError(f"this {kind}'s {what} needs a fixed series length for {converter}; pass length=T")
    if "custom calls" in text and "custom_call @" in text:
        target = text.split("custom_call @", 1)[1].split("(", 1)[0]
        return ConfigError(f"this {kind}'s {what} calls the custom kernel {target!r}, which {converter} cannot "
                           f"carry; its layers must run on plain XLA (impl 'xla' or 'scan')")
    return ConfigError(f"{converter} cannot export this {kind}'s {what}: {type(e).__name__}: {first_line(e)}")


def abstract_inputs(specs: Sequence[TensorSpec]) -> list[jax.ShapeDtypeStruct]:
    """ShapeDtypeStructs with jax symbolic dimensions for "B" and "T" (one scope for all inputs)."""
    B, T = jax.export.symbolic_shape("B, T")
    dims = {"B": B, "T": T}
    return [jax.ShapeDtypeStruct(tuple(dims[d] if isinstance(d, str) else d for d in s.shape), jnp.dtype(s.dtype))
            for s in specs]


def symbolic_shape_json(shape) -> list[int | str]:
    return [int(d) if isinstance(d, (int, np.integer)) else str(d) for d in shape]


def export_jax(model: nnx.Module, path: str | os.PathLike, *, length: int | None = None,
               platforms: Sequence[str] = ("cpu", "cuda"), step: bool | None = None,
               metadata: dict | None = None, in_features: int | None = None,
               overwrite: bool = False) -> pathlib.Path:
    """Writes ``model`` as ``jax.export`` programs into the folder ``path`` (see the module docstring).

    Each program is serialized StableHLO lowered for every platform in ``platforms`` (no device of
    that kind is needed to export); ``jax.export.deserialize(bytearray(data)).call(...)`` runs it on
    the caller's default device. ``length``: None for a symbolic T (the recurrence runs as a
    ``lax.scan``), or a fixed T (the XLA fast path where the cell has one). ``step``: None exports
    the step when the model streams, True requires it, False skips it. ``metadata``: a JSON-able
    dict stored in the manifest. ``model`` is not changed. Returns ``path``.
    """
    bad = [p for p in platforms if p not in PLATFORMS]
    if bad or not platforms:
        raise ConfigError(f"platforms must be a non-empty list from {', '.join(PLATFORMS)}, got {list(platforms)}")
    check_metadata(metadata)
    dest = check_destination(path, overwrite)
    plan_ = plan(model, length=length, impl="scan" if length is None and fixed_length(model) is None else "portable",
                 step=step, in_features=in_features)
    files, functions = {}, {}
    for name, prog in (("sequence", plan_.sequence), ("step", plan_.step)):
        if prog is None:
            continue
        try:
            exported = jax.export.export(jax.jit(prog.fn), platforms=tuple(platforms))(*abstract_inputs(prog.inputs))
        except UserError:
            raise
        except Exception as e:  # whatever stops the lowering: this model cannot be exported, say why
            raise refusal(model, f"{name} function", e, "jax.export") from e
        files[f"{name}.jax"] = bytes(exported.serialize())
        outputs = [{"name": n, "shape": symbolic_shape_json(a.shape), "dtype": str(a.dtype)}
                   for n, a in zip(prog.output_names, exported.out_avals)]
        functions[name] = {"file": f"{name}.jax", "inputs": [s.to_json() for s in prog.inputs], "outputs": outputs}
    extra = {"platforms": list(platforms)}
    return write_folder(dest, files, manifest(plan_, "jax.export", functions, metadata, extra, ("jax", "jaxlib")))
