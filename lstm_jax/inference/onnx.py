"""A model as ONNX graphs, through jax2onnx: the one module that touches the converter (imported lazily).

``export_onnx(model, path)`` writes the folder of :mod:`lstm_jax.inference.export` with
``sequence.onnx`` and ``step.onnx``: the same functions, inputs, outputs and manifest as the
``jax.export`` form, run by ONNX Runtime or any ONNX consumer. jax2onnx turns each ``lax.scan`` into
an ONNX ``Loop``, so the LSTM layers run on the scan path here whatever their ``impl``; the native and
cuDNN kernels are custom calls it cannot convert, and the XLA fast path's fused bidirectional layer
is a ``vmap`` of a custom VJP that jax2onnx 0.13 fails on under jax 0.10. What converts and what does
not: docs/export.md. Needs the ``export`` extra (``pip install 'lstm_jax[export]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import warnings

from flax import nnx

from lstm_jax.errors import ConfigError, UserError
from lstm_jax.inference.export import (
    abstract_inputs,
    check_destination,
    check_metadata,
    first_line,
    manifest,
    plan,
    refusal,
    write_folder,
)

OPSET = 23  # jax2onnx's default; ONNX Runtime 1.20+ runs it

# Loggers that print a traceback per optional plugin jax2onnx fails to import (dm_pix with jax 0.10),
# and a warning per initializer; none of it concerns our graphs.
_NOISY_LOGGERS = ("jax2onnx", "onnx_ir")


@contextlib.contextmanager
def _quiet():
    """The converter's logs below errors and its deprecation warnings (its Flax plugins read
    ``Variable.value``) are not the caller's concern; both are restored after."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _converter():
    """(jax2onnx.to_onnx, onnx), or a one-line ConfigError when the extra is not installed."""
    try:
        with _quiet():
            import onnx
            from jax2onnx import to_onnx
    except ImportError as e:
        raise ConfigError(f"ONNX export needs jax2onnx and onnx ({e}); pip install 'lstm_jax[export]'") from None
    return to_onnx, onnx


def export_onnx(model: nnx.Module, path: str | os.PathLike, *, length: int | None = None, step: bool | None = None,
                metadata: dict | None = None, in_features: int | None = None, overwrite: bool = False,
                opset: int = OPSET) -> pathlib.Path:
    """Writes ``model`` as ONNX graphs into the folder ``path``: ``sequence.onnx`` (inputs ``x``
    [B, T, D] float32 and ``lengths`` [B] int32), ``step.onnx`` for a model that streams (inputs the
    state entries, ``x`` [B, D] float32 and ``valid`` [B] bool; outputs the model's output and
    ``new.<entry>`` for each state entry), and ``manifest.json``.

    ``length``: None for a symbolic T, or a fixed T (a model jax2onnx cannot convert with a symbolic
    T ends in a ConfigError asking for ``length``). ``step``, ``metadata``,
    ``in_features`` and ``overwrite`` as in ``export_jax``. ``model`` is not changed. Returns ``path``.
    """
    check_metadata(metadata)
    dest = check_destination(path, overwrite)
    to_onnx, onnx = _converter()
    plan_ = plan(model, length=length, impl="scan", step=step, in_features=in_features)
    files, functions = {}, {}
    for name, prog in (("sequence", plan_.sequence), ("step", plan_.step)):
        if prog is None:
            continue
        try:
            with _quiet():
                proto = to_onnx(prog.fn, abstract_inputs(prog.inputs), model_name=f"lstm_jax_{name}", opset=opset,
                                input_names=[s.name for s in prog.inputs], output_names=list(prog.output_names))
                onnx.checker.check_model(proto)
        except UserError:
            raise
        except Exception as e:  # whatever stops the conversion: this model cannot be exported, say why
            if prog.inputs[0].shape[1:2] == ("T",):
                raise ConfigError(f"jax2onnx cannot convert this {type(model).__name__}'s {name} function with a "
                                  f"symbolic series length ({type(e).__name__}: {first_line(e)}); pass length=T "
                                  f"(pad shorter series and pass their lengths)") from e
            raise refusal(model, f"{name} function", e, "jax2onnx") from e
        files[f"{name}.onnx"] = proto.SerializeToString()
        outputs = [{"name": o.name, "shape": _shape(o), "dtype": _dtype(onnx, o)} for o in proto.graph.output]
        functions[name] = {"file": f"{name}.onnx", "inputs": [s.to_json() for s in prog.inputs], "outputs": outputs}
    extra = {"opset": opset}
    return write_folder(dest, files, manifest(plan_, "onnx", functions, metadata, extra,
                                              ("jax", "jax2onnx", "onnx")))


def _shape(value) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value.type.tensor_type.shape.dim]


def _dtype(onnx, value) -> str:
    return str(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
