"""Deterministic random-token batches in the unit layout (smoke runs, benchmarks, multi-host tests)."""

from __future__ import annotations

import numpy as np

from wan_streamer_jax import schedule
from wan_streamer_jax.config import Config


def random_token_batch(cfg: Config, step: int, batch_size: int | None = None,
                       units: int | None = None) -> dict:
  """Global batch number `step`: dict of int32 `[batch, units * L]` numpy arrays.

  Tokens are uniform in each slot's vocabulary (MISSING included); one
  segment per row; unit ids count from 0. The same `(seed, step)` gives the
  same global batch on every process.
  """
  batch_size = cfg.train.batch_size if batch_size is None else batch_size
  units = cfg.train.units_per_example if units is None else units
  layout = schedule.unit_layout(cfg)
  lay = layout.tile(units)
  vocab = lay.vocab
  rng = np.random.default_rng([cfg.train.seed, step])
  tokens = (rng.random((batch_size, lay.seq_len)) * vocab).astype(np.int32)
  out = {"tokens": tokens,
         "segment_ids": np.ones_like(tokens),
         "unit_ids": np.broadcast_to(lay.unit_index, tokens.shape).astype(np.int32)}
  if cfg.separate_targets:  # random tokens have no heard words nor swaps: the targets are the tokens
    out["target_tokens"] = tokens.copy()
  if cfg.loss_marks:  # nor answers or pauses
    out["loss_marks"] = np.zeros_like(tokens)
  return out
