"""The device mesh: three named axes, `data` x `fsdp` x `tensor`, sized from `config.mesh`.

- `data`: pure data parallelism; parameters are replicated along it.
- `fsdp`: data parallelism whose parameters and optimizer state are sharded along it (ZeRO-3 /
  FSDP); XLA all-gathers each weight where it is used.
- `tensor`: tensor (model) parallelism over heads, MLP columns and the vocabulary.

Axis types are `Auto` (classic GSPMD): jit propagates shardings from its sharded inputs, so the
step functions need no sharding annotations. A single device is the 1x1x1 mesh — one code path.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
    """The `(data, fsdp, tensor)` sizes with at most one -1 filled so that the product is `num_devices`.

    Raises ValueError naming the config keys when the sizes cannot multiply to `num_devices`.
    """
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    described = ", ".join(f"config.mesh.{name}={size}" for name, size in sizes.items())
    fill = [name for name, size in sizes.items() if size == -1]
    bad = [name for name, size in sizes.items() if size != -1 and size < 1]
    if bad or len(fill) > 1:
        raise ValueError(f"mesh sizes must be >= 1, with at most one -1 (fill the rest); got {described}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if fill:
        if num_devices % fixed:
            raise ValueError(f"{described}: the fixed axes ({fixed} devices) do not divide the {num_devices} devices")
        sizes[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"{described} multiply to {fixed} devices, but there are {num_devices} devices; "
                         "use -1 on one axis to fill the rest")
    return sizes["data"], sizes["fsdp"], sizes["tensor"]


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `Mesh` over `devices` from `config.mesh` (`data`, `fsdp`, `tensor`; -1 fills the rest).

    Without `devices`: `mesh_config.num_devices` of them (0 = every device of every process; N =
    the first N, single-process only). `jax.make_mesh` orders the devices by the physical
    topology (ICI rings on TPU), so the innermost axis (`tensor`) gets the fastest links.
    """
    if devices is None:
        devices = jax.devices()
        wanted = mesh_config.get("num_devices", 0)
        if wanted:
            if wanted > len(devices) or jax.process_count() > 1:
                raise ValueError(f"config.mesh.num_devices={wanted}, but there are {len(devices)} devices in "
                                 f"{jax.process_count()} process(es); use 0 (all devices) on several hosts")
            devices = devices[:wanted]
    devices = list(devices)
    shape = mesh_shape(mesh_config.data, mesh_config.fsdp, mesh_config.tensor, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
