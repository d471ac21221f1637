"""What every experiment front-end shares: flag parsing, one-line errors, workdirs."""

from __future__ import annotations

import datetime
import os
import sys
from typing import Callable

from absl import app, flags, logging

from lstm_jax.errors import UserError
from lstm_jax.training import TrainConfig

FLAGS = flags.FLAGS

# Multi-host: every process runs the same command with its own --process_id (or the environment
# variables below). Without a coordinator the job is one process over all its local devices.
flags.DEFINE_string("coordinator_address", os.environ.get("LSTM_JAX_COORDINATOR"),
                    "host:port of process 0, for a multi-process job (env LSTM_JAX_COORDINATOR).")
flags.DEFINE_integer("num_processes", int(os.environ.get("LSTM_JAX_NUM_PROCESSES", "1")),
                     "Processes in a multi-process job (env LSTM_JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", int(os.environ.get("LSTM_JAX_PROCESS_ID", "0")),
                     "This process's index in a multi-process job (env LSTM_JAX_PROCESS_ID).")


def define_training_flags(*, epochs: int, batch_size: int, learning_rate: float = 1e-3) -> None:
    flags.DEFINE_string("workdir", None, "Where metrics, checkpoints and the summary go (default: a fresh runs/<name>-<time>).")
    flags.DEFINE_integer("epochs", epochs, "Training epochs.")
    flags.DEFINE_integer("batch_size", batch_size, "Training batch size.")
    flags.DEFINE_float("learning_rate", learning_rate, "Adam learning rate.")
    flags.DEFINE_integer("seed", 0, "The one seed every random stream comes from.")
    flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its latest checkpoint.")
    flags.DEFINE_integer("patience", 0, "Early stopping: epochs without a better validation metric (0: off).")
    flags.DEFINE_enum("schedule", "constant", ["constant", "cosine", "warmup_cosine"], "Learning-rate schedule.")
    flags.DEFINE_integer("warmup_epochs", 0, "Linear warmup epochs, with --schedule=warmup_cosine.")
    flags.DEFINE_float("clip_norm", 0.0, "Clip gradients to this global norm (0: off).")
    flags.DEFINE_bool("quiet", False, "No per-epoch progress lines.")


MODEL_FLAGS = ("cell", "num_layers", "dropout", "input_dropout", "recurrent_dropout", "dropout_mode",
               "activation", "unroll")


def model_kwargs() -> dict:
    """ModelConfig arguments from the shared model flags (hidden_size and the rest stay with each experiment)."""
    return {name: FLAGS[name].value for name in MODEL_FLAGS}


def train_config(**overrides) -> TrainConfig:
    """The TrainConfig the training flags describe; ``overrides`` win over defaults, not over flags given."""
    values = {name: FLAGS[name].value for name in
              ("epochs", "batch_size", "learning_rate", "seed", "patience", "schedule", "warmup_epochs", "clip_norm")}
    for name, value in overrides.items():
        if not FLAGS[name].present:
            values[name] = value
    return TrainConfig(**values)


def log_fn():
    """Where per-epoch progress goes: stdout, or nowhere with --quiet."""
    return (lambda _: None) if FLAGS.quiet else (lambda line: print(line, flush=True))


def define_model_flags(*, hidden_size: int, activation: str) -> None:
    flags.DEFINE_string("cell", "lstm", "Registered cell name (see lstm_jax.cells.CELLS).")
    flags.DEFINE_integer("hidden_size", hidden_size, "Units per recurrent layer.")
    flags.DEFINE_integer("num_layers", 1, "Recurrent layers in the stack.")
    flags.DEFINE_float("dropout", 0.0, "Dropout between stacked layers, in [0, 1).")
    flags.DEFINE_string("activation", activation, "Cell activation: tanh, relu, ...")
    flags.DEFINE_integer("unroll", None, "lax.scan unroll factor (default: chosen per backend).")
    flags.DEFINE_float("input_dropout", 0.0, "Dropout on each recurrent layer's input, in [0, 1).")
    flags.DEFINE_float("recurrent_dropout", 0.0, "Dropout on the h feeding each recurrence, in [0, 1).")
    flags.DEFINE_enum("dropout_mode", "variational", ["variational", "per_step"],
                      "Input/recurrent dropout masks: one per sequence (Gal & Ghahramani) or new each step.")


def default_workdir(name: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = path = os.path.join("runs", f"{name}-{stamp}")
    k = 1
    while os.path.exists(path):
        k += 1
        path = f"{base}-{k}"
    return path


def initialize_distributed() -> None:
    """Joins a multi-process job when a coordinator is given; a no-op otherwise."""
    if FLAGS.coordinator_address is None:
        if FLAGS.num_processes != 1:
            raise UserError("--num_processes > 1 needs --coordinator_address")
        return
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
        raise UserError(f"--process_id must be in [0, {FLAGS.num_processes}), got {FLAGS.process_id}")
    import jax

    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if jax.process_index() != 0:
        sys.stdout = open(os.devnull, "w")  # one report per job; errors still reach stderr


def enable_compilation_cache() -> None:
    """Keeps compiled XLA programs across runs, so a second run skips most compilation.

    The folder is $LSTM_JAX_COMPILATION_CACHE (default ~/.cache/lstm_jax/xla); set it to 0 to
    switch the cache off.
    """
    path = os.environ.get("LSTM_JAX_COMPILATION_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "lstm_jax", "xla"))
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


def run(main: Callable[[list[str]], None]) -> None:
    """``app.run`` that turns bad input (``UserError``, bad flags) into one line on stderr, exit 2."""

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
