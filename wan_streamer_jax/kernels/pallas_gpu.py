"""Pallas GPU (Triton) kernels: one program per (batch, head, tile), a loop over its list.

Layout is the model's own, `[batch, len, heads, head_dim]` (Triton has no
(8, 128) block rule, so no transposes). Forward and dq: grid `(batch, heads,
n_q_tiles)`; the program loads its query tile once and runs a `fori_loop` of
`fwd_num[b, i]` steps (a dynamic bound), step `s` slicing key tile
`fwd_tile[b, i, s]` out of the full-length k/v refs. dk/dv: grid `(batch,
kv_heads, n_k_tiles)`, looping over the GQA group and over `bwd_num[b, j]`
query tiles. The element mask is applied only on steps flagged partial
(`lax.cond`). Tiles and head_dim are powers of two >= 16 (Triton's dot).
The same kernels run on CPU with `interpret=True` (that is how they are tested
without a GPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from wan_streamer_jax.kernels.mask import visible_broadcast
from wan_streamer_jax.kernels.pallas_tpu import NN, NT, _dot
from wan_streamer_jax.kernels.xla import EMPTY_LSE, F32, MASK_VALUE


def _mask_if(needs, x, vis_fn, fill):
  """`where(vis, x, fill)` on partial tiles only."""
  return lax.cond(needs, lambda: jnp.where(vis_fn(), x, fill), lambda: x)


def _fwd_kernel(q_ref, k_ref, v_ref, qu_ref, qs_ref, ku_ref, ks_ref, tile_ref, mask_ref, num_ref,
                o_ref, lse_ref, *, st):
  i = pl.program_id(2)
  bq, bk, d = q_ref.shape[0], st.block_k, q_ref.shape[1]
  q = q_ref[...]
  qu, qs = qu_ref[...][:, None], qs_ref[...][:, None]

  def body(s, carry):
    m, l, acc = carry
    ks_ = pl.ds(pl.multiple_of(tile_ref[s] * bk, bk), bk)
    logits = _dot(q, k_ref[ks_, :], NT) * st.scale
    vis = lambda: visible_broadcast(qu, ku_ref[ks_][None, :], qs, ks_ref[ks_][None, :],
                                    window_units=st.window_units, sink_units=st.sink_units)
    needs = mask_ref[s] != 0
    x = _mask_if(needs, logits, vis, MASK_VALUE)
    m_new = jnp.maximum(m, jnp.max(x, axis=1))
    alpha = jnp.exp(m - m_new)
    p = _mask_if(needs, jnp.exp(x - m_new[:, None]), vis, 0.0)
    v = v_ref[ks_, :]
    acc = alpha[:, None] * acc + _dot(p.astype(v.dtype), v, NN)
    return m_new, alpha * l + jnp.sum(p, axis=1), acc

  init = (jnp.full((bq,), -jnp.inf, F32), jnp.zeros((bq,), F32), jnp.zeros((bq, d), F32))
  m, l, acc = lax.fori_loop(0, num_ref[i], body, init)
  seen = l > 0
  l_safe = jnp.where(seen, l, 1.0)
  o_ref[...] = (acc / l_safe[:, None]).astype(o_ref.dtype)
  lse_ref[...] = jnp.where(seen, m + jnp.log(l_safe), EMPTY_LSE)


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qu_ref, qs_ref, ku_ref, ks_ref, tile_ref,
               mask_ref, num_ref, dq_ref, *, st):
  i = pl.program_id(2)
  bk = st.block_k
  q, do = q_ref[...], do_ref[...]
  lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]
  qu, qs = qu_ref[...][:, None], qs_ref[...][:, None]

  def body(s, dq):
    ks_ = pl.ds(pl.multiple_of(tile_ref[s] * bk, bk), bk)
    k = k_ref[ks_, :]
    vis = lambda: visible_broadcast(qu, ku_ref[ks_][None, :], qs, ks_ref[ks_][None, :],
                                    window_units=st.window_units, sink_units=st.sink_units)
    p = _mask_if(mask_ref[s] != 0, jnp.exp(_dot(q, k, NT) * st.scale - lse), vis, 0.0)
    ds = p * (_dot(do, v_ref[ks_, :], NT) - delta)
    return dq + _dot(ds.astype(k.dtype), k, NN)

  dq = lax.fori_loop(0, num_ref[i], body, jnp.zeros(q.shape, F32))
  dq_ref[...] = (dq * st.scale).astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qu_ref, qs_ref, ku_ref, ks_ref,
                tile_ref, mask_ref, num_ref, dk_ref, dv_ref, *, st, group):
  j = pl.program_id(2)
  bq = st.block_q
  k, v = k_ref[...], v_ref[...]
  ku, ks = ku_ref[...][:, None], ks_ref[...][:, None]
  dk = jnp.zeros(k.shape, F32)
  dv = jnp.zeros(v.shape, F32)
  for gi in range(group):
    def body(s, carry, gi=gi):
      dk, dv = carry
      qs_ = pl.ds(pl.multiple_of(tile_ref[s] * bq, bq), bq)
      q, do = q_ref[qs_, gi, :], do_ref[qs_, gi, :]
      vis = lambda: visible_broadcast(qu_ref[qs_][None, :], ku, qs_ref[qs_][None, :], ks,
                                      window_units=st.window_units, sink_units=st.sink_units)
      p_t = jnp.exp(_dot(k, q, NT) * st.scale - lse_ref[gi, qs_][None, :])  # [bk, bq]
      p_t = _mask_if(mask_ref[s] != 0, p_t, vis, 0.0)
      dv = dv + _dot(p_t.astype(do.dtype), do, NN)
      ds_t = p_t * (_dot(v, do, NT) - delta_ref[gi, qs_][None, :])
      return dk + _dot(ds_t.astype(q.dtype), q, NN), dv
    dk, dv = lax.fori_loop(0, num_ref[j], body, (dk, dv))
  dk_ref[...] = (dk * st.scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _params(d):
  return plgpu.CompilerParams(num_warps=4 if d <= 64 else 8, num_stages=2)


def forward(st, q, k, v, ids, tiles, *, interpret):
  """q `[B, Tq, H, D]`, k/v `[B, Tk, KVH, D]` -> (o `[B, Tq, H, D]`, lse `[B, H, Tq]`)."""
  qu, qs, ku, ks = ids
  bsz, tq, h, d = q.shape
  tk, kvh = k.shape[1], k.shape[2]
  bq, g = st.block_q, h // kvh
  nq, nk = tq // bq, tk // st.block_k
  tile, mask, num = tiles[:3]
  full_kv = pl.BlockSpec((None, tk, None, d), lambda b, hh, i: (b, 0, lax.div(hh, g), 0))
  q_spec = pl.BlockSpec((None, bq, None, d), lambda b, hh, i: (b, i, hh, 0))
  qid = pl.BlockSpec((None, bq), lambda b, hh, i: (b, i))
  kid = pl.BlockSpec((None, tk), lambda b, hh, i: (b, 0))
  lst = pl.BlockSpec((None, None, nk), lambda b, hh, i: (b, i, 0))
  return pl.pallas_call(
      functools.partial(_fwd_kernel, st=st), grid=(bsz, h, nq),
      in_specs=[q_spec, full_kv, full_kv, qid, qid, kid, kid, lst, lst,
                pl.BlockSpec((None, nq), lambda b, hh, i: (b, 0))],
      out_specs=[q_spec, pl.BlockSpec((None, None, bq), lambda b, hh, i: (b, hh, i))],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((bsz, h, tq), F32)],
      interpret=interpret, compiler_params=None if interpret else _params(d), name="block_causal_fwd_gpu",
  )(q, k, v, qu, qs, ku, ks, tile, mask, num)


def backward(st, q, k, v, do, lse, delta, ids, tiles, *, interpret):
  """Gradients `(dq, dk, dv)` in the model layout; lse/delta `[B, H, Tq]`."""
  qu, qs, ku, ks = ids
  bsz, tq, h, d = q.shape
  tk, kvh = k.shape[1], k.shape[2]
  bq, bk, g = st.block_q, st.block_k, h // kvh
  nq, nk = tq // bq, tk // bk
  ftile, fmask, fnum, btile, bmask, bnum = tiles
  params = None if interpret else _params(d)
  full_kv = pl.BlockSpec((None, tk, None, d), lambda b, hh, i: (b, 0, lax.div(hh, g), 0))
  q_spec = pl.BlockSpec((None, bq, None, d), lambda b, hh, i: (b, i, hh, 0))
  row = pl.BlockSpec((None, None, bq), lambda b, hh, i: (b, hh, i))
  qid = pl.BlockSpec((None, bq), lambda b, hh, i: (b, i))
  kid = pl.BlockSpec((None, tk), lambda b, hh, i: (b, 0))
  lst = pl.BlockSpec((None, None, nk), lambda b, hh, i: (b, i, 0))
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, st=st), grid=(bsz, h, nq),
      in_specs=[q_spec, full_kv, full_kv, q_spec, row, row, qid, qid, kid, kid, lst, lst,
                pl.BlockSpec((None, nq), lambda b, hh, i: (b, 0))],
      out_specs=q_spec, out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype), interpret=interpret,
      compiler_params=params, name="block_causal_dq_gpu",
  )(q, k, v, do, lse, delta, qu, qs, ku, ks, ftile, fmask, fnum)

  full_q = pl.BlockSpec((None, tq, g, d), lambda b, kh, j: (b, 0, kh, 0))
  k_spec = pl.BlockSpec((None, bk, None, d), lambda b, kh, j: (b, j, kh, 0))
  group_rows = pl.BlockSpec((None, g, tq), lambda b, kh, j: (b, kh, 0))
  qid = pl.BlockSpec((None, tq), lambda b, kh, j: (b, 0))
  kid = pl.BlockSpec((None, bk), lambda b, kh, j: (b, j))
  lst = pl.BlockSpec((None, None, nq), lambda b, kh, j: (b, j, 0))
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, st=st, group=g), grid=(bsz, kvh, nk),
      in_specs=[full_q, k_spec, k_spec, full_q, group_rows, group_rows, qid, qid, kid, kid, lst, lst,
                pl.BlockSpec((None, nk), lambda b, kh, j: (b, 0))],
      out_specs=[k_spec, k_spec],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      interpret=interpret, compiler_params=params, name="block_causal_dkv_gpu",
  )(q, k, v, do, lse, delta, qu, qs, ku, ks, btile, bmask, bnum)
  return dq, dk, dv
