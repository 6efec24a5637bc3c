"""Data parallelism with `jax.sharding`: the batch is split over a 1-D device mesh named
``"data"``; parameters and optimizer state are replicated on every device."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (all devices by default)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that puts a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    """ValueError unless ``batch_size`` splits evenly over the mesh's devices."""
    count = mesh.devices.size
    if batch_size % count:
        raise ValueError(
            f"batch_size must be a multiple of the number of devices ({count}), got {batch_size}"
        )


def shard_batch(batch: Any, mesh: Mesh, batch_axis: int) -> Any:
    """Constrains every array of ``batch`` to be split over ``"data"`` along ``batch_axis``
    (inside jit); a one-device mesh leaves it unchanged."""
    if mesh.devices.size == 1:
        return batch

    def constrain(x):
        spec = [None] * x.ndim
        spec[batch_axis] = "data"
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))

    return jax.tree.map(constrain, batch)
