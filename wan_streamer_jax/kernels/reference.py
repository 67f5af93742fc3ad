"""Dense masked attention: the oracle every other implementation is tested against."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wan_streamer_jax.kernels.mask import visible


def reference_block_causal_attention(q, k, v, q_unit, kv_unit, q_segment, kv_segment, *,
                                     window_units=None, sink_units=0, scale=None):
  """Block-causal attention by materialising the full mask.

  Args:
    q: `[batch, q_len, heads, head_dim]`.
    k, v: `[batch, kv_len, kv_heads, head_dim]`; heads % kv_heads == 0 (GQA).
    q_unit, q_segment: int32 `[batch, q_len]`; kv_unit, kv_segment: int32 `[batch, kv_len]`.
  Returns:
    `[batch, q_len, heads, head_dim]` in q's dtype. Rows with no visible key
    (padding) are 0.
  """
  b, tq, h, d = q.shape
  kvh = k.shape[2]
  scale = d ** -0.5 if scale is None else scale
  qg = q.reshape(b, tq, kvh, h // kvh, d)
  hi = jax.lax.Precision.HIGHEST  # an accurate oracle on TPU/GPU too
  logits = jnp.einsum("bqkgd,bskd->bkgqs", qg.astype(jnp.float32), k.astype(jnp.float32), precision=hi) * scale
  mask = visible(q_unit, kv_unit, q_segment, kv_segment, window_units=window_units,
                 sink_units=sink_units)[:, None, None]
  logits = jnp.where(mask, logits, -1e30)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = jnp.where(mask, probs, 0.0)
  out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v.astype(jnp.float32), precision=hi)
  return out.reshape(b, tq, h, d).astype(q.dtype)
