"""Checkpoints. The only module that touches orbax, whose API moves between releases.

Layout: ``DIR/<step>/{state,meta}`` written by an orbax ``CheckpointManager``, so any orbax user
can read it. ``state`` is a pytree of arrays (parameters, optimizer state, RNG key data), ``meta``
is JSON (epoch, step, the validation metric). Two checkpoints are kept: the latest, for resuming,
and the best by the validation metric, for the final evaluation (they may be the same step).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from lstm_jax.errors import CheckpointError


class Checkpointer:
    """Keeps the latest and the best checkpoint under ``directory``.

    ``metric`` names the entry of ``meta`` that ranks checkpoints; ``mode`` is 'min' or 'max'.
    """

    def __init__(self, directory: str | os.PathLike, *, metric: str, mode: str = "min", read_only: bool = False):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.metric = metric
        self.mode = mode
        # A read-only manager warns, three times, that it is read-only: that is what was asked for.
        with _quiet_absl() if read_only else contextlib.nullcontext():
            options = _options(metric, mode, read_only)
            try:
                self._manager = ocp.CheckpointManager(self.directory, options=options)
            except Exception as e:  # orbax raises many types for an unreadable directory
                raise CheckpointError(f"cannot open checkpoints in {self.directory}: {e}") from None

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Saves a pytree of arrays and its JSON metadata; ``meta[metric]`` ranks it."""
        if self.metric not in meta:
            raise ValueError(f"meta must contain {self.metric!r}")
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            metrics={self.metric: float(meta[self.metric])},
        )

    def wait(self) -> None:
        """Blocks until every save has reached the disk."""
        self._manager.wait_until_finished()

    def all_steps(self) -> list[int]:
        self.wait()
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        self.wait()
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        self.wait()
        return self._manager.best_step()

    def restore(self, step: int, like: Any) -> tuple[Any, dict[str, Any]]:
        """Restores ``step`` into the structure, shapes and dtypes of ``like``. Returns (state, meta)."""
        self.wait()
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            out = self._manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
            )
            state, meta = out["state"], out["meta"]
        except Exception as e:  # a truncated or corrupted checkpoint raises from deep inside orbax/tensorstore
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} is unreadable ({first}); its files were left as they are"
            ) from None
        if meta is None or not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {step} in {self.directory} has no metadata; its files were left as they are")
        return state, meta

    def restore_as_saved(self, step: int) -> tuple[Any, dict[str, Any]]:
        """Restores ``step`` as it was saved (nested dicts and lists of arrays, no target structure):
        for a reader that needs a part of it, such as the parameters. Returns (state, meta)."""
        self.wait()
        try:
            out = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
        except Exception as e:  # see restore
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} is unreadable ({first}); its files were left as they are"
            ) from None
        return out["state"], out["meta"] or {}

    def close(self) -> None:
        self.wait()
        self._manager.close()


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """absl (orbax's logger) at ERROR inside, restored after."""
    before = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(before)


def _options(metric: str, mode: str, read_only: bool) -> ocp.CheckpointManagerOptions:
    policies = ocp.checkpoint_managers
    return ocp.CheckpointManagerOptions(
        # best_fn makes orbax write each step's metrics to disk and rank by them; without it,
        # best_step() silently returns the latest step and a restarted manager cannot rank.
        best_fn=lambda m: m[metric],
        best_mode=mode,
        preservation_policy=policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=1),
                policies.BestN(get_metric_fn=lambda m: m[metric], reverse=(mode == "min"), n=1),
            ]
        ),
        # Writing overlaps the next epoch; wait() (called before any restore and at the end of a
        # run) makes "saved" mean saved. A save cut short never replaces the last complete one.
        enable_async_checkpointing=True,
        create=not read_only,
        read_only=read_only,
    )
