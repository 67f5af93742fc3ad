"""The one entry point for block-causal attention."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wan_streamer_jax.kernels.reference import reference_block_causal_attention


def _check(q, k, v, q_unit, kv_unit, q_segment, kv_segment):
  if q.ndim != 4:
    raise ValueError(f"q: expected [batch, q_len, heads, head_dim], got shape {q.shape}")
  for name, x in (("k", k), ("v", v)):
    if x.ndim != 4 or x.shape[0] != q.shape[0] or x.shape[3] != q.shape[3]:
      raise ValueError(f"{name}: expected [batch={q.shape[0]}, kv_len, kv_heads, head_dim={q.shape[3]}], got shape {x.shape}")
  if k.shape != v.shape:
    raise ValueError(f"v: expected the shape of k {k.shape}, got {v.shape}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"heads: q heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]})")
  for name, x, n in (("q_unit", q_unit, q.shape[1]), ("kv_unit", kv_unit, k.shape[1]),
                     ("q_segment", q_segment, q.shape[1]), ("kv_segment", kv_segment, k.shape[1])):
    if x.shape != (q.shape[0], n):
      raise ValueError(f"{name}: expected shape {(q.shape[0], n)}, got {x.shape}")
    if x.dtype != jnp.int32:
      raise ValueError(f"{name}: expected int32, got {x.dtype}")


def resolve_impl(impl: str) -> str:
  if impl == "auto":
    return "xla" if jax.default_backend() == "cpu" else "pallas"
  return impl


def prepare_attention(q_unit, kv_unit, q_segment=None, kv_segment=None, *, window_units=None,
                      sink_units=0, impl="auto"):
  """Per-batch attention metadata, computed ONCE outside the layer scan.

  Returns a pytree to pass as `metadata=` to every `block_causal_attention`
  call of the batch (None where the implementation needs none).
  """
  del q_unit, kv_unit, q_segment, kv_segment, window_units, sink_units
  impl = resolve_impl(impl)
  return None


def block_causal_attention(q, k, v, *, q_unit, kv_unit, q_segment=None, kv_segment=None,
                           window_units=None, sink_units=0, impl="auto", scale=None, metadata=None):
  """Block-causal attention (DESIGN §1, §4).

  Args:
    q: `[batch, q_len, heads, head_dim]`.
    k, v: `[batch, kv_len, kv_heads, head_dim]`.
    q_unit, kv_unit: int32 `[batch, len]` unit ids (from 0 per segment).
    q_segment, kv_segment: int32 `[batch, len]` segment ids, 0 = padding;
      None = one segment.
    window_units, sink_units: optional sliding window over units plus sinks.
    impl: "auto" | "reference" | "xla" | "pallas".
    metadata: the result of `prepare_attention` for these ids, or None.
  Returns:
    `[batch, q_len, heads, head_dim]`.
  """
  q_segment = jnp.ones_like(q_unit) if q_segment is None else q_segment
  kv_segment = jnp.ones_like(kv_unit) if kv_segment is None else kv_segment
  _check(q, k, v, q_unit, kv_unit, q_segment, kv_segment)
  impl = resolve_impl(impl)
  if impl == "reference":
    return reference_block_causal_attention(q, k, v, q_unit, kv_unit, q_segment, kv_segment,
                                            window_units=window_units, sink_units=sink_units, scale=scale)
  raise ValueError(f"impl: expected one of auto|reference|xla|pallas (available so far: reference), got {impl!r}")
