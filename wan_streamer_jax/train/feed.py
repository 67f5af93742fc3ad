"""Host batches -> global sharded arrays (single- and multi-process)."""

from __future__ import annotations

import jax
import numpy as np


def process_slice(global_batch_size: int) -> slice:
  """Rows of the global batch this process feeds (data sharded per process)."""
  n, i = jax.process_count(), jax.process_index()
  if global_batch_size % n:
    raise ValueError(f"train.batch_size={global_batch_size} must be divisible by the process count {n}")
  per = global_batch_size // n
  return slice(i * per, (i + 1) * per)


def to_global(local_batch: dict, shardings: dict) -> dict:
  """Process-local numpy rows -> global `jax.Array`s laid out by `shardings`."""
  return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v))
          for k, v in local_batch.items()}
