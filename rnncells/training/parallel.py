"""Data parallelism with `jax.sharding`: the batch is split over a 1-D device mesh named
``"data"``; parameters and optimizer state are replicated on every device.

In a multi-process run (`rnncells.training.distributed`) the mesh spans every process's
devices (``jax.devices()`` is global), and nothing else changes: the training step, with
its batch generation, is one jitted SPMD program that each process runs on its own
devices.

Each device generates only its own rows of every batch. The batch is drawn inside the
jitted step from the data key and then constrained to be split along its batch axis
(`shard_batch`); XLA's partitioner carries that split back through the generator, and
with ``jax_threefry_partitionable`` (JAX's default since 0.5) the random bits of row
``i`` are a function of the key and ``i`` alone, so each device computes only its rows'
bits, and the values do not depend on how many devices or processes share the batch.
(The compiled step shows it: the generator's ops have shape ``(seeds, batch_size /
devices, T)``; ``tests/training/test_distributed.py`` checks this.) With
``jax_threefry_partitionable=False`` the values would still be the same on any mesh, but
every device would compute the whole batch.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "check_batch_divisible",
    "make_mesh",
    "replicated",
    "shard_batch",
]


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (all devices, of every process,
    by default)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that puts a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    """ValueError unless ``batch_size`` splits evenly over the mesh's devices."""
    count = mesh.devices.size
    if batch_size % count:
        processes = len({d.process_index for d in mesh.devices.flat})
        over = f" over {processes} processes" if processes > 1 else ""
        raise ValueError(
            f"batch_size must be a multiple of the number of devices ({count}{over}), "
            f"got {batch_size}"
        )


def shard_batch(batch: Any, mesh: Mesh, batch_axis: int) -> Any:
    """Constrains every array of ``batch`` to be split over ``"data"`` along ``batch_axis``
    (inside jit); a one-device mesh leaves it unchanged."""
    if mesh.devices.size == 1:
        return batch

    def constrain(x):
        spec: list[str | None] = [None] * x.ndim
        spec[batch_axis] = "data"
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))

    return jax.tree.map(constrain, batch)
