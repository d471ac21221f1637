"""How long to train when the config does not say: epochs from a compute budget, small sets repeated.

A budget of ``work`` row-steps shows each of N training rows of length T ``work / (N T)`` times,
clipped to ``[min_passes, max_passes]``; an epoch of a tiny training set repeats its rows, so that
each epoch (one validation, one checkpoint) covers at least ``min_epoch_rows`` rows.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lstm_jax.data.dataset import Dataset, Split
from lstm_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class WorkBudget:
    """``work`` row-steps (rows x length) over the run, as passes over the training rows in [min, max]."""

    work: float
    min_passes: int = 5
    max_passes: int = 300


def budget_epochs(budget: WorkBudget, rows: int, length: int, epoch_rows: int) -> int:
    """Epochs of ``epoch_rows`` rows that show each of ``rows`` training rows ``passes`` times, where
    passes = work / (rows x length) clipped to [min_passes, max_passes]."""
    if budget.work <= 0:
        raise ConfigError("epochs must be >= 1 (epochs=0 takes them from a budget, and budget.work is 0)")
    passes = int(min(budget.max_passes, max(budget.min_passes, budget.work / (rows * length))))
    return max(1, round(passes * rows / epoch_rows))


def repeat_rows(split: Split, min_rows: int) -> tuple[Split, int]:
    """``split`` repeated whole until it has at least ``min_rows`` rows; returns (split, repeats).

    The training loop shuffles the repeated rows together, so an epoch is ``repeats`` passes in one
    shuffled order: fewer, longer epochs (one validation and one checkpoint each) on tiny datasets.
    """
    r = max(1, math.ceil(min_rows / len(split))) if min_rows > 0 else 1
    if r == 1:
        return split, 1
    tile = lambda a: None if a is None else np.concatenate([a] * r)  # noqa: E731
    return Split(tile(split.x), tile(split.y), tile(split.lengths)), r


def epoch_plan(data: Dataset, *, epochs: int, budget: WorkBudget, min_epoch_rows: int,
               eval_batch_size: int) -> tuple[Dataset, int, int]:
    """(data with a small training set repeated within an epoch, epochs, eval batch size).

    ``epochs`` 0 takes them from ``budget``; an ``eval_batch_size`` of 0 takes the validation set in
    one batch (rounded up to 16 rows): evaluation pads its last batch, and a 512-row batch for a
    65-row validation set would cost more than an epoch on long series.
    """
    rows, length = len(data.train), data.train.x.shape[1]
    train, repeats = repeat_rows(data.train, min_epoch_rows)
    if repeats > 1:
        data = Dataset(train, data.val, data.test, info={**data.info, "train_repeats_per_epoch": repeats})
    epochs = epochs or budget_epochs(budget, rows, length, len(train))
    eval_batch = eval_batch_size or int(min(512, 16 * math.ceil(max(len(data.val), 1) / 16)))
    return data, epochs, eval_batch
