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


def _heads_major(x, kvh):
  """`[b, t, h, d]` -> `[b, kv_heads, group, t, d]` (done once, outside the chunk loops: the
  loops' matmuls then have leading batch dims and XLA inserts no per-iteration transposes)."""
  return jnp.moveaxis(_group(x, kvh), 1, 3)


def _time_chunks(x, n, axis):
  """Split `axis` (time) into `n` chunks and move the chunk index to the front."""
  shape = x.shape[:axis] + (n, x.shape[axis] // n) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def _forward(st: Static, q, k, v, ids, tiles):
  qu, qs, ku, ks = ids
  fwd_tile, fwd_mask, fwd_num = tiles[:3]
  b, tq, h, d = q.shape
  kvh, bk = k.shape[2], st.block_k
  g, nq = h // kvh, tq // st.block_q
  kh, vh = jnp.moveaxis(k, 1, 2), jnp.moveaxis(v, 1, 2)  # [b, kvh, tk, d]

  def chunk(xs):
    qc, qu_c, qs_c, tile, needs, num = xs  # qc [b, kvh, g, cq, d]; tile [nk], num scalar

    def step(s, carry):
      m, l, acc = carry
      start = tile[s] * bk
      kc, vc = lax.dynamic_slice_in_dim(kh, start, bk, 2), lax.dynamic_slice_in_dim(vh, start, bk, 2)
      logits = _einsum("bkgqd,bksd->bkgqs", qc, kc) * st.scale
      active = jnp.ones((b,), bool)  # the loop runs over the batch's list only

      def update(mask):
        x = logits if mask is None else jnp.where(mask, logits, MASK_VALUE)
        m_new = jnp.maximum(m, jnp.max(x, axis=-1))
        alpha = jnp.exp(m - m_new)
        p = jnp.exp(x - m_new[..., None])
        if mask is not None:
          p = jnp.where(mask, p, 0.0)
        pv = _einsum("bkgqs,bksd->bkgqd", p.astype(v.dtype), vc)
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
    return out.astype(q.dtype), lse  # [b, kvh, g, cq, d], [b, kvh, g, cq]

  xs = (_time_chunks(_heads_major(q, kvh), nq, 3), _chunks(qu, nq), _chunks(qs, nq),
        *_batch_union(fwd_tile, fwd_mask, fwd_num))
  out, lse = lax.map(chunk, xs)  # [nq, b, kvh, g, cq, ...]
  out = jnp.moveaxis(out, 0, 3).reshape(b, kvh, g, tq, d)
  lse = jnp.moveaxis(lse, 0, 3).reshape(b, kvh, g, tq)
  return jnp.moveaxis(out, 3, 1).reshape(b, tq, h, d), jnp.moveaxis(lse, 3, 1).reshape(b, tq, h)


def _backward(st: Static, q, k, v, ids, tiles, out, lse, dout):
  qu, qs, ku, ks = ids
  bwd_tile, bwd_mask, bwd_num = tiles[3:]
  b, tq, h, d = q.shape
  kvh, bq, bk = k.shape[2], st.block_q, st.block_k
  g, nk = h // kvh, k.shape[1] // bk
  delta = jnp.sum(dout.astype(F32) * out.astype(F32), axis=-1)  # [b, tq, h]
  qh, doh = _heads_major(q, kvh), _heads_major(dout, kvh)  # [b, kvh, g, tq, d]
  lse_h = jnp.moveaxis(_group(lse, kvh), 1, 3)  # [b, kvh, g, tq]
  del_h = jnp.moveaxis(_group(delta, kvh), 1, 3)

  def chunk(dq, xs):
    kc, vc, ku_c, ks_c, tile, needs, num = xs  # kc [b, kvh, ck, d]

    def step(s, carry):
      dq, dk, dv = carry
      start = tile[s] * bq
      rows = lambda x: lax.dynamic_slice_in_dim(x, start, bq, 3)  # noqa: E731
      qc, doc, lse_c, del_c = rows(qh), rows(doh), rows(lse_h), rows(del_h)
      logits = _einsum("bkgqd,bksd->bkgqs", qc, kc) * st.scale
      p = jnp.exp(logits - lse_c[..., None])
      active = jnp.ones((b,), bool)  # the loop runs over the batch's list only

      def masked():
        mask = _tile_mask(st, lax.dynamic_slice_in_dim(qu, start, bq, 1),
                          lax.dynamic_slice_in_dim(qs, start, bq, 1), ku_c, ks_c, active)
        return jnp.where(mask, p, 0.0)

      p = lax.cond(needs[s] != 0, masked, lambda: p)
      dv = dv + _einsum("bkgqs,bkgqd->bksd", p.astype(dout.dtype), doc)
      dp = _einsum("bkgqd,bksd->bkgqs", doc, vc)
      ds = p * (dp - del_c[..., None])
      dk = dk + _einsum("bkgqs,bkgqd->bksd", ds.astype(q.dtype), qc)
      dq_c = _einsum("bkgqs,bksd->bkgqd", ds.astype(k.dtype), kc)
      dq = lax.dynamic_update_slice_in_dim(dq, rows(dq) + dq_c, start, 3)
      return dq, dk, dv

    zeros = jnp.zeros((b, kvh, bk, d), F32)
    dq, dk, dv = lax.fori_loop(0, num, step, (dq, zeros, zeros))
    return dq, (dk * st.scale, dv)

  xs = (_time_chunks(jnp.moveaxis(k, 1, 2), nk, 2), _time_chunks(jnp.moveaxis(v, 1, 2), nk, 2),
        _chunks(ku, nk), _chunks(ks, nk), *_batch_union(bwd_tile, bwd_mask, bwd_num))
  dq, (dk, dv) = lax.scan(chunk, jnp.zeros((b, kvh, g, tq, d), F32), xs)
  dq = jnp.moveaxis(dq, 3, 1).reshape(b, tq, h, d)
  kv_back = lambda x: jnp.moveaxis(jnp.moveaxis(x, 0, 2).reshape(b, kvh, -1, d), 1, 2)  # noqa: E731
  return (dq * st.scale).astype(q.dtype), kv_back(dk).astype(k.dtype), kv_back(dv).astype(v.dtype)


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


MIN_CHUNK_TOKENS = 128  # below this the loop's per-chunk cost outweighs the keys it skips (CPU)
MAX_CHUNK_TOKENS = 1024  # above this a training chunk's work outgrows what it saves in loop trips


def unit_chunk_tokens(tokens_per_unit: int, q_units: int | None = None, *, window_units: int | None = None,
                      sink_units: int = 0) -> int:
  """The chunk size (tokens) for this path: a whole number of units, so that the chunk pairs of a
  training window are fully visible or fully masked (no element mask).

  Training (`q_units`: the window's units, counted from 0; keys are the same units): chunks of at
  least `MIN_CHUNK_TOKENS`, and among those the one whose visited chunk pairs cover the least area
  (padding to whole chunks and the window's ragged edge cost as much as visible keys); ties go to
  the smaller chunk. Decode (`q_units=None`: one unit of queries against a cache): the largest
  whole-unit chunk of at most `MIN_CHUNK_TOKENS` (at least one unit).

  Measured on 2 CPU cores: demo config, 33-unit windows of 48 tokens, attention fwd+bwd per layer:
  2-unit chunks (96 tokens, the decode rule, used for training before) 221 ms, 3-unit chunks (144:
  11 chunks, no padding; this rule) 189 ms, 1 unit 239 ms, 4 units 244 ms, 8 units 306 ms. Decode,
  stream_demo config (17-unit cache of 80 tokens), whole streaming step: 1-unit chunks 15.4 ms,
  2 units 18.1 ms, one cache-sized chunk 17.7 ms (the least area is not the fastest here).
  """
  L = tokens_per_unit
  if q_units is None:
    return L * max(1, MIN_CHUNK_TOKENS // L)
  area = functools.partial(visited_chunk_pairs, q_units, window_units=window_units, sink_units=sink_units)
  lo = max(1, -(-MIN_CHUNK_TOKENS // L))
  hi = max(lo, min(q_units, MAX_CHUNK_TOKENS // L))
  return L * min(range(lo, hi + 1), key=lambda n: (area(n) * n * n, n))


def visited_chunk_pairs(q_units: int, chunk_units: int, *, window_units: int | None = None, sink_units: int = 0) -> int:
  """Chunk pairs of `chunk_units`-unit chunks that a training window of `q_units` units (one segment,
  units from 0) visits, each judged by the rule on its closest (query, key) pair and on its key
  chunk's first unit against its last query unit (the sinks)."""
  n, c = chunk_units, -(-q_units // chunk_units)
  first = np.arange(c) * n
  last = np.minimum(first + n, q_units) - 1
  q_lo, q_hi, k_lo, k_hi = first[:, None], last[:, None], first[None, :], last[None, :]
  rule = functools.partial(visible_broadcast, qs=1, ks=1, window_units=window_units, sink_units=sink_units)
  u = np.clip(np.maximum(q_lo, k_lo), None, q_hi)  # the query nearest after the key chunk's start
  return int(np.sum(rule(u, np.clip(u, k_lo, k_hi)) | rule(q_hi, k_lo)))
