"""Pallas TPU (Mosaic) kernels: the grid walks the metadata's tile lists.

Layout: q/o/do `[batch, heads, q_len, head_dim]`, k/v `[batch, kv_heads, kv_len,
head_dim]` (heads before tokens, so a block's last two dims are
`(tile, head_dim)`: tile % 8 == 0 and head_dim full). Ids: q as columns
`[batch, q_len, 2]` and kv as rows `[batch, 2, kv_len]` (unit, segment) for
the forward/dq passes, transposed for dk/dv. Softmax statistics lse/delta:
columns `[batch, heads, q_len, 1]`, rows `[batch, heads, 1, q_len]` for dk/dv.

Forward and dq: grid `(batch, heads, n_q_tiles, n_k_tiles)`; step `s` of query
tile `i` works on key tile `fwd_tile[b, i, s]` (scalar-prefetched into SMEM,
flattened 1-D) and does nothing for `s >= fwd_num[b, i]`; the index maps read
the same list, whose tail repeats the last tile, so skipped steps fetch no new
block. dk/dv: grid `(batch, kv_heads, n_k_tiles, group, n_q_tiles)` over the
transposed lists, accumulating the whole GQA group into one dk/dv tile. The
element mask (the exact `visible` rule) is computed only on steps flagged
partial. Runs compiled on TPU, and on CPU with `interpret=True` or
`interpret=pltpu.InterpretParams()` (the TPU simulator).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from wan_streamer_jax.kernels.mask import visible_broadcast
from wan_streamer_jax.kernels.xla import EMPTY_LSE, F32, MASK_VALUE

NT = (((1,), (1,)), ((), ()))  # a @ b.T
NN = (((1,), (0,)), ((), ()))  # a @ b
COUNT_BLOCK = (8, 128)  # per query tile: lane 0 = tiles visited, lane 1 = of which masked


def _dot(a, b, dims):
  prec = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return lax.dot_general(a, b, dims, precision=prec, preferred_element_type=F32)


def _when_masked(needs, body):
  """Runs `body(masked)` once, with masked=True iff the scalar `needs` is set."""
  pl.when(needs)(functools.partial(body, True))
  pl.when(jnp.logical_not(needs))(functools.partial(body, False))


def _fwd_kernel(tile_ref, mask_ref, num_ref, q_ref, k_ref, v_ref, qid_ref, kid_ref, o_ref, lse_ref,
                *rest, st, nq, nk, count):
  cnt_ref, (m_sc, l_sc, acc_sc) = (rest[0], rest[1:]) if count else (None, rest)
  b, i, s = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  row = b * nq + i

  @pl.when(s == 0)
  def _init():
    m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, F32)
    l_sc[...] = jnp.zeros(l_sc.shape, F32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, F32)
    if count:
      cnt_ref[...] = jnp.zeros(cnt_ref.shape, jnp.int32)

  @pl.when(s < num_ref[row])
  def _visit():
    needs = mask_ref[row * nk + s] != 0
    logits = _dot(q_ref[...], k_ref[...], NT) * st.scale  # [bq, bk]

    def update(masked):
      x = logits
      if masked:
        qid, kid = qid_ref[...], kid_ref[...]
        vis = visible_broadcast(qid[:, 0:1], kid[0:1, :], qid[:, 1:2], kid[1:2, :],
                                window_units=st.window_units, sink_units=st.sink_units)
        x = jnp.where(vis, x, MASK_VALUE)
      m_prev = m_sc[...]
      m_new = jnp.maximum(m_prev, jnp.max(x, axis=-1, keepdims=True))
      alpha = jnp.exp(m_prev - m_new)
      p = jnp.exp(x - m_new)
      if masked:
        p = jnp.where(vis, p, 0.0)
      v = v_ref[...]
      l_sc[...] = alpha * l_sc[...] + jnp.sum(p, axis=-1, keepdims=True)
      acc_sc[...] = alpha * acc_sc[...] + _dot(p.astype(v.dtype), v, NN)
      m_sc[...] = m_new

    _when_masked(needs, update)
    if count:
      lane = lax.broadcasted_iota(jnp.int32, COUNT_BLOCK, 1)
      cnt_ref[...] += jnp.where(lane == 0, 1, jnp.where(lane == 1, needs.astype(jnp.int32), 0))

  @pl.when(s == nk - 1)
  def _finish():
    l = l_sc[...]
    seen = l > 0
    l_safe = jnp.where(seen, l, 1.0)
    o_ref[...] = (acc_sc[...] / l_safe).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(seen, m_sc[...] + jnp.log(l_safe), EMPTY_LSE)


def _dq_kernel(tile_ref, mask_ref, num_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qid_ref,
               kid_ref, dq_ref, dq_sc, *, st, nq, nk):
  b, i, s = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  row = b * nq + i

  @pl.when(s == 0)
  def _init():
    dq_sc[...] = jnp.zeros(dq_sc.shape, F32)

  @pl.when(s < num_ref[row])
  def _visit():
    k = k_ref[...]
    p = jnp.exp(_dot(q_ref[...], k, NT) * st.scale - lse_ref[...])  # [bq, bk]

    def update(masked):
      pm = p
      if masked:
        qid, kid = qid_ref[...], kid_ref[...]
        vis = visible_broadcast(qid[:, 0:1], kid[0:1, :], qid[:, 1:2], kid[1:2, :],
                                window_units=st.window_units, sink_units=st.sink_units)
        pm = jnp.where(vis, p, 0.0)
      do = do_ref[...]
      ds = pm * (_dot(do, v_ref[...], NT) - delta_ref[...])
      dq_sc[...] += _dot(ds.astype(k.dtype), k, NN)

    _when_masked(mask_ref[row * nk + s] != 0, update)

  @pl.when(s == nk - 1)
  def _finish():
    dq_ref[...] = (dq_sc[...] * st.scale).astype(dq_ref.dtype)


def _dkv_kernel(tile_ref, mask_ref, num_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qid_ref,
                kid_ref, dk_ref, dv_ref, dk_sc, dv_sc, *, st, nk, nq, group):
  b, j, gi, s = pl.program_id(0), pl.program_id(2), pl.program_id(3), pl.program_id(4)
  col = b * nk + j

  @pl.when((gi == 0) & (s == 0))
  def _init():
    dk_sc[...] = jnp.zeros(dk_sc.shape, F32)
    dv_sc[...] = jnp.zeros(dv_sc.shape, F32)

  @pl.when(s < num_ref[col])
  def _visit():
    q, k = q_ref[...], k_ref[...]
    p_t = jnp.exp(_dot(k, q, NT) * st.scale - lse_ref[...])  # [bk, bq], lse a row [1, bq]

    def update(masked):
      pm = p_t
      if masked:
        qid, kid = qid_ref[...], kid_ref[...]  # [2, bq] rows, [bk, 2] columns
        vis = visible_broadcast(qid[0:1, :], kid[:, 0:1], qid[1:2, :], kid[:, 1:2],
                                window_units=st.window_units, sink_units=st.sink_units)
        pm = jnp.where(vis, p_t, 0.0)
      do = do_ref[...]
      dv_sc[...] += _dot(pm.astype(do.dtype), do, NN)
      ds_t = pm * (_dot(v_ref[...], do, NT) - delta_ref[...])
      dk_sc[...] += _dot(ds_t.astype(q.dtype), q, NN)

    _when_masked(mask_ref[col * nq + s] != 0, update)

  @pl.when((gi == group - 1) & (s == nq - 1))
  def _finish():
    dk_ref[...] = (dk_sc[...] * st.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def _params(n_parallel, n_arbitrary, interpret):
  if interpret:
    return None
  return pltpu.CompilerParams(dimension_semantics=("parallel",) * n_parallel + ("arbitrary",) * n_arbitrary)


def forward(st, q, k, v, qid_col, kid_row, tiles, *, interpret, count=False):
  """q `[B, H, Tq, D]`, k/v `[B, KVH, Tk, D]` -> (o `[B, H, Tq, D]`, lse `[B, H, Tq, 1]`[, counts])."""
  bsz, h, tq, d = q.shape
  kvh, tk = k.shape[1], k.shape[2]
  bq, bk, g = st.block_q, st.block_k, h // kvh
  nq, nk = tq // bq, tk // bk
  tile, mask, num = (t.reshape(-1) for t in tiles[:3])

  def kv_map(b, hh, i, s, tile, mask, num):
    return b, lax.div(hh, g), tile[(b * nq + i) * nk + s], 0

  def kid_map(b, hh, i, s, tile, mask, num):
    return b, 0, tile[(b * nq + i) * nk + s]

  qmap = lambda b, hh, i, s, *_: (b, hh, i, 0)
  in_specs = [pl.BlockSpec((None, None, bq, d), qmap), pl.BlockSpec((None, None, bk, d), kv_map),
              pl.BlockSpec((None, None, bk, d), kv_map),
              pl.BlockSpec((None, bq, 2), lambda b, hh, i, s, *_: (b, i, 0)),
              pl.BlockSpec((None, 2, bk), kid_map)]
  out_specs = [pl.BlockSpec((None, None, bq, d), qmap), pl.BlockSpec((None, None, bq, 1), qmap)]
  out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((bsz, h, tq, 1), F32)]
  if count:
    out_specs.append(pl.BlockSpec((None, None) + COUNT_BLOCK, qmap))
    out_shape.append(jax.ShapeDtypeStruct((bsz, h, nq * COUNT_BLOCK[0], COUNT_BLOCK[1]), jnp.int32))
  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=3, grid=(bsz, h, nq, nk), in_specs=in_specs, out_specs=out_specs,
      scratch_shapes=[pltpu.VMEM((bq, 1), F32), pltpu.VMEM((bq, 1), F32), pltpu.VMEM((bq, d), F32)])
  kernel = functools.partial(_fwd_kernel, st=st, nq=nq, nk=nk, count=count)
  return pl.pallas_call(kernel, grid_spec=grid_spec, out_shape=out_shape, interpret=interpret,
                        compiler_params=_params(3, 1, interpret), name="block_causal_fwd")(
                            tile, mask, num, q, k, v, qid_col, kid_row)


def backward(st, q, k, v, do, lse_col, delta_col, ids, tiles, *, interpret):
  """Gradients in the kernel layout: (dq `[B, H, Tq, D]`, dk, dv `[B, KVH, Tk, D]`).

  ids: (qid_col `[B, Tq, 2]`, kid_row `[B, 2, Tk]`, qid_row `[B, 2, Tq]`, kid_col `[B, Tk, 2]`).
  """
  qid_col, kid_row, qid_row, kid_col = ids
  bsz, h, tq, d = q.shape
  kvh, tk = k.shape[1], k.shape[2]
  bq, bk, g = st.block_q, st.block_k, h // kvh
  nq, nk = tq // bq, tk // bk
  ftile, fmask, fnum, btile, bmask, bnum = (t.reshape(-1) for t in tiles)

  def kv_map(b, hh, i, s, tile, mask, num):
    return b, lax.div(hh, g), tile[(b * nq + i) * nk + s], 0

  def kid_map(b, hh, i, s, tile, mask, num):
    return b, 0, tile[(b * nq + i) * nk + s]

  qmap = lambda b, hh, i, s, *_: (b, hh, i, 0)
  dq_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=3, grid=(bsz, h, nq, nk),
      in_specs=[pl.BlockSpec((None, None, bq, d), qmap), pl.BlockSpec((None, None, bk, d), kv_map),
                pl.BlockSpec((None, None, bk, d), kv_map), pl.BlockSpec((None, None, bq, d), qmap),
                pl.BlockSpec((None, None, bq, 1), qmap), pl.BlockSpec((None, None, bq, 1), qmap),
                pl.BlockSpec((None, bq, 2), lambda b, hh, i, s, *_: (b, i, 0)),
                pl.BlockSpec((None, 2, bk), kid_map)],
      out_specs=pl.BlockSpec((None, None, bq, d), qmap),
      scratch_shapes=[pltpu.VMEM((bq, d), F32)])
  dq = pl.pallas_call(functools.partial(_dq_kernel, st=st, nq=nq, nk=nk), grid_spec=dq_spec,
                      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype), interpret=interpret,
                      compiler_params=_params(3, 1, interpret), name="block_causal_dq")(
                          ftile, fmask, fnum, q, k, v, do, lse_col, delta_col, qid_col, kid_row)

  def q_map(b, kh, j, gi, s, tile, mask, num):
    return b, kh * g + gi, tile[(b * nk + j) * nq + s], 0

  def row_map(b, kh, j, gi, s, tile, mask, num):
    return b, kh * g + gi, 0, tile[(b * nk + j) * nq + s]

  def qid_map(b, kh, j, gi, s, tile, mask, num):
    return b, 0, tile[(b * nk + j) * nq + s]

  kmap = lambda b, kh, j, gi, s, *_: (b, kh, j, 0)
  lse_row, delta_row = lse_col.swapaxes(2, 3), delta_col.swapaxes(2, 3)
  dkv_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=3, grid=(bsz, kvh, nk, g, nq),
      in_specs=[pl.BlockSpec((None, None, bq, d), q_map), pl.BlockSpec((None, None, bk, d), kmap),
                pl.BlockSpec((None, None, bk, d), kmap), pl.BlockSpec((None, None, bq, d), q_map),
                pl.BlockSpec((None, None, 1, bq), row_map), pl.BlockSpec((None, None, 1, bq), row_map),
                pl.BlockSpec((None, 2, bq), qid_map),
                pl.BlockSpec((None, bk, 2), lambda b, kh, j, gi, s, *_: (b, j, 0))],
      out_specs=[pl.BlockSpec((None, None, bk, d), kmap), pl.BlockSpec((None, None, bk, d), kmap)],
      scratch_shapes=[pltpu.VMEM((bk, d), F32), pltpu.VMEM((bk, d), F32)])
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, st=st, nk=nk, nq=nq, group=g), grid_spec=dkv_spec,
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      interpret=interpret, compiler_params=_params(3, 2, interpret), name="block_causal_dkv")(
          btile, bmask, bnum, q, k, v, do, lse_row, delta_row, qid_row, kid_col)
  return dq, dk, dv
