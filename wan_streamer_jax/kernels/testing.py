"""Layouts and dense tile counts for tests and benchmarks of the attention kernels."""

from __future__ import annotations

import numpy as np

from wan_streamer_jax.kernels.mask import visible


def uniform_layout(batch: int, length: int, unit_len: int):
  """One segment per row, units of `unit_len` tokens: int32 `(unit, segment)` `[batch, length]`."""
  unit = np.broadcast_to(np.arange(length, dtype=np.int32) // unit_len, (batch, length))
  return np.ascontiguousarray(unit), np.ones((batch, length), np.int32)


def random_layout(rng: np.random.Generator, batch: int, length: int, *, max_unit: int = 40,
                  max_segments: int = 3, pad_prob: float = 0.5, unit_sizes=None):
  """Random packed rows: segments of units of random length, padding between/after.

  Unit lengths are drawn from `unit_sizes` (default: 1 token, a few tokens, and
  up to `max_unit` tokens), so units of one token and units longer than a tile
  both appear. Returns int32 `(unit, segment)` `[batch, length]`.
  """
  unit = np.zeros((batch, length), np.int32)
  seg = np.zeros((batch, length), np.int32)
  for b in range(batch):
    pos, sid = 0, 0
    n_seg = rng.integers(1, max_segments + 1)
    bounds = np.sort(rng.choice(np.arange(1, length), size=n_seg - 1, replace=False)) if n_seg > 1 else []
    ends = list(bounds) + [length]
    for end in ends:
      if rng.random() < pad_prob and end - pos > 2:  # padding run before this segment
        pos += int(rng.integers(1, max(2, (end - pos) // 4)))
      sid += 1
      u = 0
      seg_end = end - (int(rng.integers(0, max(1, (end - pos) // 4))) if rng.random() < pad_prob else 0)
      while pos < seg_end:
        size = int(rng.choice(unit_sizes)) if unit_sizes is not None else int(
            rng.choice([1, rng.integers(2, 6), rng.integers(min(6, max_unit), max_unit + 1)]))
        n = min(size, seg_end - pos)
        unit[b, pos:pos + n] = u
        seg[b, pos:pos + n] = sid
        pos += n
        u += 1
      pos = max(pos, end)
  return unit, seg


def dense_tile_tables(q_unit, kv_unit, q_segment, kv_segment, *, block_q, block_k,
                      window_units=None, sink_units=0):
  """From the dense mask: (visited, partial) bool `[batch, n_q_tiles, n_k_tiles]` (numpy)."""
  vis = np.asarray(visible(np.asarray(q_unit), np.asarray(kv_unit), np.asarray(q_segment),
                           np.asarray(kv_segment), window_units=window_units, sink_units=sink_units))
  b, tq, tk = vis.shape
  nq, nk = -(-tq // block_q), -(-tk // block_k)
  padded = np.zeros((b, nq * block_q, nk * block_k), bool)
  padded[:, :tq, :tk] = vis
  tiles = padded.reshape(b, nq, block_q, nk, block_k)
  visited = tiles.any(axis=(2, 4))
  full = tiles.all(axis=(2, 4))
  return visited, visited & ~full
