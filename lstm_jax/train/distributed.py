"""Devices and hosts: the data mesh, batches split over it, and values brought back to the host.

Parameters are replicated; every batch is split over a 1-D ``'data'`` mesh that spans every device
of every process. In a multi-process job each process feeds only its own rows of a global batch.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

Array = jax.Array


def data_mesh() -> Mesh:
    """A 1-D 'data' mesh over every device of every process, each process's devices contiguous.

    Process p then owns rows [p * B / P, (p + 1) * B / P) of every global batch.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), ("data",))


def is_primary() -> bool:
    """Process 0 writes the job's files and prints its progress."""
    return jax.process_index() == 0


def replicate(tree: Any, mesh: Mesh) -> Any:
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, Array]:
    """A global batch -> arrays split over the data mesh; each process supplies only its rows."""
    sharding = NamedSharding(mesh, P("data"))
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    p, n = jax.process_index(), jax.process_count()

    def local(x):
        rows = len(x) // n
        return jax.make_array_from_process_local_data(sharding, x[p * rows : (p + 1) * rows], x.shape)

    return jax.tree.map(local, batch)


def to_host(tree: Any) -> Any:
    """Device values -> NumPy. Replicated values that span other processes are read locally."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def gather(x: Array) -> np.ndarray:
    """A batch-sharded array as one NumPy array on every process."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
