"""Running a kernel once per batch shard under data parallelism.

XLA cannot split a custom call (the native kernels, cuDNN) over a sharded batch: left alone it
gathers the whole batch onto every device and runs the whole layer on each. Batch rows of a
recurrent layer are independent, so :func:`per_shard` runs the call under ``shard_map`` over a 1-D
mesh of every device instead: each device runs its own rows, and only the weight gradients are
summed across devices.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

AXIS = "batch"


def batch_mesh(batch_size: int) -> Mesh | None:
    """A 1-D mesh over every device, to split ``batch_size`` rows over; None where that does not apply.

    None with one device, when the batch does not divide by the device count (the call then runs
    unsplit, which is correct but gathers the batch), and inside a ``shard_map`` already (the
    arrays there are one device's rows). The devices are ordered by (process, id), as
    ``lstm_jax.train.distributed.data_mesh`` orders them, so a batch sharded by the training mesh is
    already where this mesh wants it.
    """
    n = jax.device_count()
    if n == 1 or batch_size % n:
        return None
    abstract = jax.sharding.get_abstract_mesh()
    if not abstract.empty and abstract.manual_axes:
        return None
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (AXIS,))


def per_shard(fn: Callable, mesh: Mesh | None, in_specs, out_specs) -> Callable:
    """``fn`` under ``shard_map`` on ``mesh`` (``fn`` itself when ``mesh`` is None).

    Specs name the batch axis ``AXIS``; ``P()`` is replicated. Replication is not checked (the
    custom calls have no rule for it), so ``fn`` must ``psum`` whatever it returns as ``P()``.
    """
    if mesh is None:
        return fn
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def psum(x):
    """Sums over the batch shards (inside :func:`per_shard`)."""
    return jax.lax.psum(x, AXIS)


BATCH = P(AXIS)  # [B, ...]
TIME_BATCH = P(None, AXIS)  # [T, B, ...] or [1, B, ...]
REPLICATED = P()
