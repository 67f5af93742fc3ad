"""Multi-host start-up through JAX's own runtime (`jax.distributed.initialize`)."""

from __future__ import annotations

import jax
from absl import logging


def initialize(coordinator_address: str | None, num_processes: int = 1, process_id: int = 0,
               *, cpu_collectives: str = "gloo") -> None:
  """Joins a multi-process run; a no-op for a single process without a coordinator.

  On CPU the cross-process collectives go through gloo (set before the backend
  starts). On TPU pods call with `coordinator_address=None` and the cluster
  environment is auto-detected when `num_processes > 1`.
  """
  if num_processes <= 1 and coordinator_address is None:
    return
  if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  kwargs = {}
  if coordinator_address is not None:
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  jax.distributed.initialize(**kwargs)
  logging.info("process %d/%d: %d local devices, %d global", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
