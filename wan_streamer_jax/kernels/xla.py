"""Chunked block-causal attention in plain jnp/lax (`impl="xla"`, the CPU default).

The batch shares one tile list (the union of its rows' lists from the
metadata; rows of a training batch have near-identical layouts), so chunks
are plain dynamic slices: no per-row gathers or scatters. Forward: for each
query chunk (a `lax.map` over chunks), a `while` loop over exactly the listed
key chunks, with a flash-style online softmax; the exact element mask is
computed only on chunks some row sees partially (or not at all). Backward
(`jax.custom_vjp`): for each key chunk, a loop over the query chunks that see
it, accumulating dk/dv for the chunk and adding dq into the full dq carry --
one recomputation of the probabilities for all three gradients.

GQA: q is viewed as `[batch, len, kv_heads, group, head_dim]`; k/v are never
repeated. Scores, softmax statistics and accumulators are float32; matmul
inputs keep the compute dtype (bfloat16 stays bfloat16, accumulating in f32).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wan_streamer_jax.kernels.mask import visible_broadcast
from wan_streamer_jax.kernels.metadata import compact

MASK_VALUE = -1e30  # large finite negative: masked scores; never -inf (NaN-free padding rows)
EMPTY_LSE = 1e30  # logsumexp of a row that sees no key: exp(s - EMPTY_LSE) == 0
F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Static:
  scale: float
  window_units: int | None
  sink_units: int
  block_q: int
  block_k: int


def _einsum(spec, a, b):
  """f32 accumulation; full f32 precision for f32 inputs (TPU would default to bf16 passes)."""
  prec = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return jnp.einsum(spec, a, b, precision=prec, preferred_element_type=F32)


def _batch_union(tile, needs, num):
  """Per-row tile lists `[b, rows, cols]` -> one list for the whole batch: `[rows, cols]`, `[rows]`.

  A tile is visited if any row visits it; it needs the element mask if any row
  masks it or some row skips it (the exact mask keeps every row exact). One
  list for all rows turns the per-row gathers/scatters of k, v, q and dq into
  plain dynamic slices, which is what makes this path fast on CPU.
  """
  n = tile.shape[-1]
  active = jnp.arange(n, dtype=jnp.int32) < num[..., None]                       # [b, r, c]
  hit = jax.nn.one_hot(tile, n, dtype=jnp.int32) * active[..., None]            # [b, r, c, n]
  visited_rows = jnp.sum(hit, axis=2) > 0                                       # [b, r, n]
  masked_rows = jnp.sum(hit * needs[..., None], axis=2) > 0
  visited = jnp.any(visited_rows, axis=0)
  partial = jnp.any(masked_rows, axis=0) | (visited & ~jnp.all(visited_rows, axis=0))
  t, m, k = compact(visited[None], partial[None])
  return t[0], m[0], k[0]


def _chunks(x, n):
  """`[b, n*c, ...]` -> `[n, b, c, ...]` (leading axis for lax.map/scan)."""
  return x.reshape(x.shape[0], n, x.shape[1] // n, *x.shape[2:]).swapaxes(0, 1)


def _unchunk(x):
  return x.swapaxes(0, 1).reshape(x.shape[1], -1, *x.shape[3:])


def _group(x, kvh):
  """`[b, c, h, d]` -> `[b, c, kv_heads, group, d]`."""
  return x.reshape(*x.shape[:2], kvh, x.shape[2] // kvh, *x.shape[3:])


def _tile_mask(st, qu, qs, ku, ks, active):
  """Exact rule on one chunk pair: `[b, 1, 1, cq, ck]` (broadcasts over kv_heads, group)."""
  vis = visible_broadcast(qu[:, :, None], ku[:, None, :], qs[:, :, None], ks[:, None, :],
                          window_units=st.window_units, sink_units=st.sink_units)
  return (vis & active[:, None, None])[:, None, None]


def _forward(st: Static, q, k, v, ids, tiles):
  qu, qs, ku, ks = ids
  fwd_tile, fwd_mask, fwd_num = tiles[:3]
  b, tq, h, d = q.shape
  kvh, bk = k.shape[2], st.block_k
  g, nq = h // kvh, tq // st.block_q

  def chunk(xs):
    qc, qu_c, qs_c, tile, needs, num = xs  # qc [b, cq, kvh, g, d]; tile [nk], num scalar

    def step(s, carry):
      m, l, acc = carry
      start = tile[s] * bk
      kc, vc = lax.dynamic_slice_in_dim(k, start, bk, 1), lax.dynamic_slice_in_dim(v, start, bk, 1)
      logits = _einsum("bqkgd,bskd->bkgqs", qc, kc) * st.scale
      active = jnp.ones((b,), bool)  # the loop runs over the batch's list only

      def update(mask):
        x = logits if mask is None else jnp.where(mask, logits, MASK_VALUE)
        m_new = jnp.maximum(m, jnp.max(x, axis=-1))
        alpha = jnp.exp(m - m_new)
        p = jnp.exp(x - m_new[..., None])
        if mask is not None:
          p = jnp.where(mask, p, 0.0)
        pv = _einsum("bkgqs,bskd->bkgqd", p.astype(v.dtype), vc)
        return m_new, alpha * l + jnp.sum(p, axis=-1), alpha[..., None] * acc + pv

      def masked():
        return update(_tile_mask(st, qu_c, qs_c, lax.dynamic_slice_in_dim(ku, start, bk, 1),
                                 lax.dynamic_slice_in_dim(ks, start, bk, 1), active))

      return lax.cond(needs[s] != 0, masked, lambda: update(None))

    init = (jnp.full((b, kvh, g, st.block_q), -jnp.inf, F32), jnp.zeros((b, kvh, g, st.block_q), F32),
            jnp.zeros((b, kvh, g, st.block_q, d), F32))
    m, l, acc = lax.fori_loop(0, num, step, init)
    seen = l > 0
    out = acc / jnp.where(seen, l, 1.0)[..., None]
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), EMPTY_LSE)
    # [b, kvh, g, cq, ...] -> [b, cq, h, ...]
    out = jnp.moveaxis(out, 3, 1).reshape(b, st.block_q, h, d).astype(q.dtype)
    return out, jnp.moveaxis(lse, 3, 1).reshape(b, st.block_q, h)

  xs = (_chunks(_group(q, kvh), nq), _chunks(qu, nq), _chunks(qs, nq),
        *_batch_union(fwd_tile, fwd_mask, fwd_num))
  out, lse = lax.map(chunk, xs)
  return _unchunk(out), _unchunk(lse)


def _backward(st: Static, q, k, v, ids, tiles, out, lse, dout):
  qu, qs, ku, ks = ids
  bwd_tile, bwd_mask, bwd_num = tiles[3:]
  b, tq, h, d = q.shape
  kvh, bq, bk = k.shape[2], st.block_q, st.block_k
  g, nk = h // kvh, k.shape[1] // bk
  delta = jnp.sum(dout.astype(F32) * out.astype(F32), axis=-1)  # [b, tq, h]

  def chunk(dq, xs):
    kc, vc, ku_c, ks_c, tile, needs, num = xs  # kc [b, ck, kvh, d]

    def step(s, carry):
      dq, dk, dv = carry
      start = tile[s] * bq
      rows = lambda x: lax.dynamic_slice_in_dim(x, start, bq, 1)
      qc, doc = _group(rows(q), kvh), _group(rows(dout), kvh)
      lse_c = jnp.moveaxis(_group(rows(lse), kvh), 1, 3)  # [b, kvh, g, cq]
      del_c = jnp.moveaxis(_group(rows(delta), kvh), 1, 3)
      logits = _einsum("bqkgd,bskd->bkgqs", qc, kc) * st.scale
      p = jnp.exp(logits - lse_c[..., None])
      active = jnp.ones((b,), bool)  # the loop runs over the batch's list only

      def masked():
        mask = _tile_mask(st, rows(qu), rows(qs), ku_c, ks_c, active)
        return jnp.where(mask, p, 0.0)

      p = lax.cond(needs[s] != 0, masked, lambda: p)
      dv = dv + _einsum("bkgqs,bqkgd->bskd", p.astype(dout.dtype), doc)
      dp = _einsum("bqkgd,bskd->bkgqs", doc, vc)
      ds = p * (dp - del_c[..., None])
      dk = dk + _einsum("bkgqs,bqkgd->bskd", ds.astype(q.dtype), qc)
      dq_c = _einsum("bkgqs,bskd->bqkgd", ds.astype(k.dtype), kc)
      dq = lax.dynamic_update_slice_in_dim(dq, rows(dq) + dq_c.reshape(b, bq, h, d), start, 1)
      return dq, dk, dv

    zeros = jnp.zeros((b, bk, kvh, d), F32)
    dq, dk, dv = lax.fori_loop(0, num, step, (dq, zeros, zeros))
    return dq, (dk * st.scale, dv)

  xs = (_chunks(k, nk), _chunks(v, nk), _chunks(ku, nk), _chunks(ks, nk),
        *_batch_union(bwd_tile, bwd_mask, bwd_num))
  dq, (dk, dv) = lax.scan(chunk, jnp.zeros((b, tq, h, d), F32), xs)
  return (dq * st.scale).astype(q.dtype), _unchunk(dk).astype(k.dtype), _unchunk(dv).astype(v.dtype)


def float0_zeros(tree):
  """Cotangents for integer inputs of a custom_vjp."""
  return jax.tree.map(lambda x: np.zeros(x.shape, jax.dtypes.float0), tree)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def xla_attention(st: Static, q, k, v, ids, tiles):
  """Chunked attention on padded inputs.

  Args:
    st: static config (scale, window, sinks, chunk sizes).
    q: `[b, tq, h, d]`, k/v: `[b, tk, kv_heads, d]`, tq % block_q == tk % block_k == 0.
    ids: `(q_unit, q_segment, kv_unit, kv_segment)`, int32 `[b, tq]` / `[b, tk]`.
    tiles: `AttentionMetadata.arrays()` for these ids and chunk sizes.
  Returns:
    `[b, tq, h, d]` in q's dtype; rows that see no key are 0.
  """
  return _forward(st, q, k, v, ids, tiles)[0]


def _fwd(st, q, k, v, ids, tiles):
  out, lse = _forward(st, q, k, v, ids, tiles)
  return out, (q, k, v, ids, tiles, out, lse)


def _bwd(st, res, dout):
  q, k, v, ids, tiles, out, lse = res
  dq, dk, dv = _backward(st, q, k, v, ids, tiles, out, lse, dout)
  return dq, dk, dv, float0_zeros(ids), float0_zeros(tiles)


xla_attention.defvjp(_fwd, _bwd)
