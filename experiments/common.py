"""What every experiment front-end shares: the config flag, its shortcuts, one-line errors, workdirs.

A run's configuration is a config file (``--config=PATH``, or the experiment's default for the
dataset) with dotted overrides (``--config.epochs=3``) and short flags (``--epochs=3``). The short
flags are shortcuts onto config fields, all defined in ``SHORTCUTS`` below; giving a field both
ways is refused. Flags are defined when a front-end starts (``run``), not on import, so every
experiment module imports into one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections
from absl import app, flags, logging

from lstm_jax.errors import ConfigError, UserError

FLAGS = flags.FLAGS
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


@dataclasses.dataclass(frozen=True)
class Shortcut:
    field: str  # dotted path in the config
    kind: str  # int | float | bool | string | ints (comma-separated integers)
    help: str


SHORTCUTS: dict[str, Shortcut] = {s_name: s for s_name, s in {
    # training
    "epochs": Shortcut("epochs", "int", "Training epochs (0 in a recipe: from its compute budget)."),
    "batch_size": Shortcut("batch_size", "int", "Training batch size."),
    "learning_rate": Shortcut("learning_rate", "float", "Adam learning rate."),
    "seed": Shortcut("seed", "int", "The one seed every random stream comes from."),
    "patience": Shortcut("patience", "int", "Early stopping: epochs without a better validation metric (0: off)."),
    "schedule": Shortcut("schedule", "string", "Learning-rate schedule: constant, cosine, warmup_cosine."),
    "warmup_epochs": Shortcut("warmup_epochs", "int", "Linear warmup epochs, with --schedule=warmup_cosine."),
    "clip_norm": Shortcut("clip_norm", "float", "Clip gradients to this global norm (0: off)."),
    "select": Shortcut("select", "string", "The validation metric that picks the checkpoint scored at the end."),
    "profile_steps": Shortcut("profile_steps", "int", "Write a jax.profiler trace of N training steps into the workdir."),
    # the network
    "cell": Shortcut("model.cell", "string", "Registered cell name (see lstm_jax.nn.cells.CELLS)."),
    "hidden_size": Shortcut("model.hidden_size", "int", "Units per recurrent layer."),
    "num_layers": Shortcut("model.num_layers", "int", "Recurrent layers in the stack."),
    "bidirectional": Shortcut("model.bidirectional", "bool", "Bidirectional layers (the seed's third variant)."),
    "dropout": Shortcut("model.dropout", "float", "Dropout between stacked layers, in [0, 1)."),
    "input_dropout": Shortcut("model.input_dropout", "float", "Dropout on each recurrent layer's input, in [0, 1)."),
    "recurrent_dropout": Shortcut("model.recurrent_dropout", "float", "Dropout on the h feeding each recurrence."),
    "dropout_mode": Shortcut("model.dropout_mode", "string", "Input/recurrent dropout masks: variational or per_step."),
    "activation": Shortcut("model.activation", "string", "Cell activation: tanh, relu, ..."),
    "unroll": Shortcut("model.unroll", "int", "lax.scan unroll factor (default: chosen per backend)."),
    "pooling": Shortcut("model.pooling", "string", "How the sequence becomes features: last (valid step) or mean."),
    "model": Shortcut("model.architecture", "string",
                      "The classifier: lstm (the recurrent stack), lstm_fcn (dimension shuffle, as published), "
                      "lstm_fcn_time (its LSTM over time) or fcn."),
    "conv_filters": Shortcut("model.conv_filters", "ints", "LSTM-FCN: filters of each convolution (kernels 8, 5, 3)."),
    "conv_norm": Shortcut("model.conv_norm", "string", "LSTM-FCN: normalisation after each convolution."),
    # data
    "dataset": Shortcut("dataset", "string", "The data: see the experiment's docstring."),
    "data_dir": Shortcut("data_dir", "string", "For ucr:NAME, the folder holding NAME/NAME_TRAIN.tsv (or .ts)."),
    "znorm": Shortcut("data.znorm", "bool", "Z-normalise each series (per channel, over its valid steps)."),
    "val_fraction": Shortcut("data.val_fraction", "float", "Share of the training data held out for validation."),
    "min_epoch_rows": Shortcut("data.min_epoch_rows", "int", "Repeat a small training set within an epoch up to this many rows."),
    "window": Shortcut("data.window", "int", "Input window length (csv/tsf: automatic unless given, see lstm_jax.forecast.rules)."),
    "column": Shortcut("data.column", "string", "csv: the column to forecast."),
    "date_column": Shortcut("data.date_column", "string", "csv: an optional column of dates, recorded beside the forecast."),
    "test_size": Shortcut("data.test_size", "int", "csv: the last N values are the test, forecast multi-step (tsf: the header's @horizon unless given)."),
    "season": Shortcut("data.season", "int", "csv: the seasonal period in steps (0: detect it, tsf: from @frequency; 1: none)."),
    "missing": Shortcut("data.missing", "string", "Missing values inside a series: interpolate (with a warning) or error."),
    "norm": Shortcut("data.norm", "string", "classify: auto, series (z-normalise each), channel (training statistics) or none."),
    "label_smoothing": Shortcut("data.label_smoothing", "float", "classify: label smoothing of the cross-entropy, in [0, 1)."),
    "class_weights": Shortcut("data.class_weights", "string", "classify: none, or balanced (N / (K n_k) per class)."),
    "compare": Shortcut("compare", "string", "classify: models to train and choose among on validation, e.g. lstm,fcn."),
    "transform": Shortcut("data.transform", "string", "csv: auto, or a chain such as log,sdiff,standard."),
    "strategy": Shortcut("data.strategy", "string", "csv: direct (all --horizon values at once) or recursive."),
    "horizon": Shortcut("data.horizon", "int", "csv, direct: values per model call (0: the test span, capped)."),
    "val_size": Shortcut("data.val_size", "int", "csv: values at the end of the training part for validation (0: auto)."),
    "recipe": Shortcut("data.recipe", "string", "csv: ensemble (global LSTMs, lstm_jax.forecast.recipe) or transforms (lstm_jax.forecast.single)."),
    "id_column": Shortcut("data.id_column", "string", "Long-format csv: the column naming each series."),
    "time_column": Shortcut("data.time_column", "string", "Long-format csv: the column ordering each series."),
    "covariates": Shortcut("data.covariates", "string", "csv: other columns whose past values feed the model (A,B)."),
    "quantiles": Shortcut("data.quantiles", "string", "Quantile outputs, e.g. 0.1,0.5,0.9 (pinball loss, intervals)."),
    "statistical": Shortcut("data.statistical", "bool", "Fit the statistical references AutoETS, AutoTheta and AutoARIMA beside (statsforecast)."),
}.items()}

TRAINING = ("epochs", "batch_size", "learning_rate", "seed", "patience", "schedule", "warmup_epochs", "clip_norm",
            "select", "profile_steps")
MODEL = ("cell", "hidden_size", "num_layers", "bidirectional", "dropout", "input_dropout", "recurrent_dropout",
         "dropout_mode", "activation", "unroll")


def _define_shortcut(name: str) -> None:
    s = SHORTCUTS[name]
    define = {"int": flags.DEFINE_integer, "float": flags.DEFINE_float, "bool": flags.DEFINE_bool,
              "string": flags.DEFINE_string, "ints": flags.DEFINE_list}[s.kind]
    define(name, None, f"{s.help} Shortcut for --config.{s.field} (default: the config's).")


def define_flags(experiment: str, default_config: str, shortcuts: tuple[str, ...]) -> None:
    """The flags of one front-end: --config, its shortcuts, and the run options every experiment has."""
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config", os.path.join(CONFIG_DIR, f"{default_config}.py"),
        f"A config file (experiments/configs/*.py); default: {default_config}.py, or the recipe the "
        "dataset calls for. Override fields with --config.FIELD=VALUE.", lock_config=True)
    for name in shortcuts:
        _define_shortcut(name)
    flags.DEFINE_string("workdir", None, f"Where the run is written (default: a fresh runs/{experiment}-<time>).")
    flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its latest checkpoint.")
    flags.DEFINE_bool("quiet", False, "No per-epoch progress lines.")
    # Multi-host: every process runs the same command with its own --process_id (or the environment
    # variables below). Without a coordinator the job is one process over all its local devices.
    flags.DEFINE_string("coordinator_address", os.environ.get("LSTM_JAX_COORDINATOR"),
                        "host:port of process 0, for a multi-process job (env LSTM_JAX_COORDINATOR).")
    flags.DEFINE_integer("num_processes", int(os.environ.get("LSTM_JAX_NUM_PROCESSES", "1")),
                         "Processes in a multi-process job (env LSTM_JAX_NUM_PROCESSES).")
    flags.DEFINE_integer("process_id", int(os.environ.get("LSTM_JAX_PROCESS_ID", "0")),
                         "This process's index in a multi-process job (env LSTM_JAX_PROCESS_ID).")


# -- resolving the config --------------------------------------------------------------------------

def load_config(name: str) -> ml_collections.ConfigDict:
    """``experiments/configs/<name>.py``'s ``get_config()``."""
    return importlib.import_module(f"experiments.configs.{name}").get_config()


def get_field(config: ml_collections.ConfigDict, path: str) -> Any:
    for part in path.split("."):
        config = config[part]
    return config


def set_field(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
    """Sets an existing field (a misspelt path is an error, never a new field)."""
    *parents, last = path.split(".")
    for part in parents:
        config = config[part]
    if last not in config:
        raise ConfigError(f"the config has no field {path}")
    try:
        config[last] = value
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot set {path} to {value!r}: {str(e).splitlines()[0]}") from None


def shortcut_value(name: str, value: Any) -> Any:
    """A shortcut flag's value as its config field holds it (--hidden_size=64 -> (64,))."""
    s = SHORTCUTS[name]
    if s.kind == "ints":
        try:
            return tuple(int(v) for v in value)
        except ValueError:
            raise ConfigError(f"--{name} must be integers, got {','.join(value)}") from None
    if s.field == "model.hidden_size":
        return (int(value),)
    return value


def resolve_config(shortcuts: tuple[str, ...], default_for: Callable[[str | None], str],
                   derived: Callable[[ml_collections.ConfigDict, set[str]], None] | None = None
                   ) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """The run's config: the file, its dotted overrides, then the shortcut flags given.

    ``default_for(dataset)`` names the config file used without ``--config`` (``dataset`` is the
    ``--dataset`` flag, or None). ``derived(config, given)`` applies shortcuts that set several
    fields at once (``given``: every field set on the command line). Returns the config and a
    record of where it came from (file, overrides).
    """
    from ml_collections import config_flags

    overrides = dict(config_flags.get_override_values(FLAGS["config"]))
    if FLAGS["config"].present:
        config, source = FLAGS.config, config_flags.get_config_filename(FLAGS["config"])
        try:
            _ = config.experiment  # ml_collections reports a file it could not load on first use
        except OSError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise ConfigError(f"--config {source}: {lines[-1] if lines else 'cannot be loaded'}") from None
        except AttributeError:
            raise ConfigError(f"--config {source}: not an experiment config (it has no 'experiment' field)") from None
    else:
        dataset = FLAGS["dataset"].value if "dataset" in shortcuts else None
        name = default_for(dataset)
        source = os.path.relpath(os.path.join(CONFIG_DIR, f"{name}.py"), os.getcwd())
        config = load_config(name)
        for path, value in overrides.items():
            set_field(config, path, value)
    given = set(overrides)
    for name in shortcuts:
        value = FLAGS[name].value
        if value is None:
            continue
        field = SHORTCUTS[name].field
        if field in overrides:
            raise ConfigError(f"--{name} and --config.{field} both set {field}; give one")
        set_field(config, field, shortcut_value(name, value))
        given.add(field)
        overrides[field] = get_field(config, field)
    if derived is not None:
        derived(config, given)
    return config, {"file": source, "overrides": {k: overrides[k] for k in sorted(overrides)}}


# -- running ----------------------------------------------------------------------------------------

def train_from_flags(experiment: str, shortcuts: tuple[str, ...], default_for: Callable[[str | None], str],
                     report: Callable[[dict], None], derived=None) -> None:
    """A front-end's main: the config the flags describe, trained and evaluated, then ``report``ed."""
    from experiments.train import train_and_evaluate

    config, source = resolve_config(shortcuts, default_for, derived)
    workdir = os.path.abspath(FLAGS.workdir or default_workdir(experiment))
    print(f"workdir: {workdir}", flush=True)
    report(train_and_evaluate(config, workdir, resume=FLAGS.resume, log=log_fn(), source=source))


@contextlib.contextmanager
def data_warnings(*categories: type[Warning]) -> Iterator[None]:
    """Warnings of ``categories`` raised inside (e.g. a loader's count of interpolated values) as one
    ``warning: ...`` line each on stderr, rather than Python's two-line file-and-source form."""
    with warnings.catch_warnings(record=True) as caught:
        for category in categories:
            warnings.simplefilter("always", category)
        yield
    for w in caught:
        if issubclass(w.category, categories):
            print(f"warning: {w.message}", file=sys.stderr, flush=True)
        else:  # not ours to reword: shown as Python would have
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def default_workdir(name: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = path = os.path.join("runs", f"{name}-{stamp}")
    k = 1
    while os.path.exists(path):
        k += 1
        path = f"{base}-{k}"
    return path


def log_fn() -> Callable[[str], None]:
    """Where per-epoch progress goes: stdout, or nowhere with --quiet."""
    return (lambda _: None) if FLAGS.quiet else (lambda line: print(line, flush=True))


def initialize_distributed() -> None:
    """Joins a multi-process job when a coordinator is given; a no-op otherwise."""
    if "coordinator_address" not in FLAGS or FLAGS.coordinator_address is None:
        if "num_processes" in FLAGS and FLAGS.num_processes != 1:
            raise UserError("--num_processes > 1 needs --coordinator_address")
        return
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
        raise UserError(f"--process_id must be in [0, {FLAGS.num_processes}), got {FLAGS.process_id}")
    import jax

    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if jax.process_index() != 0:
        sys.stdout = open(os.devnull, "w")  # one report per job; errors still reach stderr


COMPILATION_CACHE = "LSTM_JAX_COMPILATION_CACHE"


def enable_compilation_cache(default: str | None = None) -> None:
    """Keeps compiled XLA programs across runs, so a second run skips most compilation.

    The folder is $LSTM_JAX_COMPILATION_CACHE, else ``default`` (else ~/.cache/lstm_jax/xla); set
    the variable to 0 to switch the cache off.
    """
    default = default or os.path.join(os.path.expanduser("~"), ".cache", "lstm_jax", "xla")
    path = os.environ.get(COMPILATION_CACHE, default)
    if path in ("", "0"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    # Small programs too: model initialisation runs many of them op by op.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(str(e).splitlines()[0])
    except (OSError, SyntaxError, TypeError, ValueError, AttributeError, KeyError) as e:
        # A config file that is missing or broken is reported by ml_collections while flags parse.
        fail(f"--config: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def run(main: Callable[[list[str]], None], *, define: Callable[[], None] | None = None) -> None:
    """``app.run`` that turns bad input (``UserError``, bad flags) into one line on stderr, exit 2.

    ``define`` defines the front-end's flags first (they are not defined on import).
    """
    if define is not None:
        try:
            define()
        except (AttributeError, KeyError) as e:
            # ml_collections reads --config.FIELD overrides from sys.argv while the flag is defined.
            fail(f"--config: the config has no field {str(e).strip(chr(34) + chr(39))!r} (a misspelt --config.FIELD?)")
        except (OSError, SyntaxError, TypeError, ValueError) as e:
            fail(f"--config: {str(e).splitlines()[0] if str(e) else type(e).__name__}")

    def guarded(argv):
        # Orbax reports every save at INFO; the epoch lines say enough unless --verbosity asks.
        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        enable_compilation_cache()
        try:
            initialize_distributed()
            main(argv)
        except UserError as e:
            fail(str(e))

    app.run(guarded, flags_parser=_parse_flags)
