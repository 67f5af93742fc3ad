"""Device meshes `(data, fsdp, tensor)` built from the config."""

from __future__ import annotations

import jax
import numpy as np

from wan_streamer_jax.config import MeshConfig
from wan_streamer_jax.parallel.rules import MESH_AXES


def make_mesh(mesh_cfg: MeshConfig, devices=None, batch_size: int | None = None) -> jax.sharding.Mesh:
  """A GSPMD (Auto axis types) mesh over `devices` (default: all global devices).

  Raises a ValueError naming both numbers when the mesh shape does not match
  the device count or, given the global `batch_size`, when `data * fsdp` does
  not divide it (checked here, before anything compiles).
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_cfg.shape(len(devices), batch_size)
  if devices == jax.devices():
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  return jax.sharding.Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)
