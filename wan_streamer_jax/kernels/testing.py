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


CASES = ("packed", "window", "decode")


def make_case(kind: str, seed: int = 0, *, batch: int = 2, length: int = 384, heads: int = 4,
              kv_heads: int = 2, head_dim: int = 16, unit_sizes=(1, 1, 3, 7, 130, 300)):
  """Named test inputs (numpy float32), as keyword arguments of `block_causal_attention`.

  "packed": packed segments with padding, ragged units (1 token .. longer than
            two 128-tiles); "window": the same with window_units=2, sink_units=1;
  "decode": one 24-token unit of queries per row against a `length`-slot cache
            filled to a different level per row (unwritten slots: segment 0),
            window_units=3, sink_units=1.
  """
  rng = np.random.default_rng(seed)
  if kind in ("packed", "window"):
    unit, seg = random_layout(rng, batch, length, unit_sizes=unit_sizes)
    q_unit, q_seg, kv_unit, kv_seg = unit, seg, unit, seg
    window, sinks = (None, 0) if kind == "packed" else (2, 1)
  elif kind == "decode":
    unit_len = 24
    kv_unit = np.zeros((batch, length), np.int32)
    kv_seg = np.zeros((batch, length), np.int32)
    q_unit = np.zeros((batch, unit_len), np.int32)
    for b in range(batch):
      n_units = int(rng.integers(2, length // unit_len + 1))
      n = n_units * unit_len
      kv_unit[b, :n] = np.arange(n) // unit_len
      kv_seg[b, :n] = 1
      q_unit[b] = n_units - 1
    q_seg = np.ones((batch, unit_len), np.int32)
    window, sinks = 3, 1
  else:
    raise ValueError(f"kind: expected one of {CASES}, got {kind!r}")
  tq, tk = q_unit.shape[1], kv_unit.shape[1]
  f = lambda *shape: rng.normal(size=shape).astype(np.float32)
  return dict(q=f(batch, tq, heads, head_dim), k=f(batch, tk, kv_heads, head_dim),
              v=f(batch, tk, kv_heads, head_dim), q_unit=q_unit, kv_unit=kv_unit, q_segment=q_seg,
              kv_segment=kv_seg, window_units=window, sink_units=sinks)


IDS = ("q_unit", "kv_unit", "q_segment", "kv_segment")


def run_case(case, impl: str, dtype=np.float32, *, seed: int = 1, **kwargs):
  """Forward and (dq, dk, dv) for a random output cotangent, under one jit.

  Returns numpy float32 `(out, (dq, dk, dv))`; `kwargs` go to
  `block_causal_attention` (tiles, interpret, pallas_target...).
  """
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from wan_streamer_jax.kernels.api import block_causal_attention  # noqa: PLC0415

  def fn(q, k, v, ct, ids):
    f = lambda q, k, v: block_causal_attention(q, k, v, **ids, window_units=case["window_units"],
                                               sink_units=case["sink_units"], impl=impl, **kwargs)
    out, vjp = jax.vjp(f, q, k, v)
    return out, vjp(ct.astype(out.dtype))

  ct = np.random.default_rng(seed).normal(size=case["q"].shape).astype(np.float32)
  ids = {n: jnp.asarray(case[n]) for n in IDS}
  out, grads = jax.jit(fn)(*(jnp.asarray(case[n], dtype) for n in "qkv"), ct, ids)
  f32 = lambda x: np.asarray(x.astype(jnp.float32))
  return f32(out), tuple(f32(g) for g in grads)


def rel_err(a, b) -> float:
  """max |a - b| / max |b|."""
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
