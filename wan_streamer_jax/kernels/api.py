"""The one entry point for block-causal attention (DESIGN §1, §4).

    meta = prepare_attention(q_unit, kv_unit, q_seg, kv_seg, impl=impl)   # once per batch
    out = block_causal_attention(q, k, v, q_unit=..., ..., impl=impl, metadata=meta)  # per layer

Implementations: "reference" (dense masked oracle), "xla" (chunked jnp/lax,
skips masked chunks; CPU default), "pallas" (flash-style kernels; TPU via
Mosaic, GPU via Triton, CPU via interpret mode), "auto" = pallas on TPU/GPU,
xla on CPU. All inputs are validated (ValueError naming the argument) before
anything is traced; with concrete ids the layout contract of `metadata.py`
(contiguous segments, non-decreasing units inside a segment) is checked too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wan_streamer_jax.kernels import metadata as md
from wan_streamer_jax.kernels.reference import reference_block_causal_attention
from wan_streamer_jax.kernels.xla import Static, xla_attention

IMPLS = ("auto", "reference", "xla", "pallas")


def _check_ids(q_len, kv_len, batch, q_unit, kv_unit, q_segment, kv_segment):
  for name, x, n in (("q_unit", q_unit, q_len), ("kv_unit", kv_unit, kv_len),
                     ("q_segment", q_segment, q_len), ("kv_segment", kv_segment, kv_len)):
    if getattr(x, "ndim", None) != 2 or tuple(x.shape) != (batch, n):
      raise ValueError(f"{name}: expected shape {(batch, n)}, got {getattr(x, 'shape', type(x))}")
    if x.dtype != jnp.int32:
      raise ValueError(f"{name}: expected int32, got {x.dtype}")


def _check(q, k, v):
  if q.ndim != 4:
    raise ValueError(f"q: expected [batch, q_len, heads, head_dim], got shape {q.shape}")
  for name, x in (("k", k), ("v", v)):
    if x.ndim != 4 or x.shape[0] != q.shape[0] or x.shape[3] != q.shape[3]:
      raise ValueError(f"{name}: expected [batch={q.shape[0]}, kv_len, kv_heads, head_dim={q.shape[3]}], got shape {x.shape}")
  if k.shape != v.shape:
    raise ValueError(f"v: expected the shape of k {k.shape}, got {v.shape}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"heads: q heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]})")
  for name, x in (("q", q), ("k", k), ("v", v)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"{name}: expected a floating dtype, got {x.dtype}")


def _check_window(window_units, sink_units):
  if window_units is not None and (not isinstance(window_units, int) or window_units < 1):
    raise ValueError(f"window_units: expected None or an int >= 1, got {window_units!r}")
  if not isinstance(sink_units, int) or sink_units < 0:
    raise ValueError(f"sink_units: expected an int >= 0, got {sink_units!r}")


def resolve_impl(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f"impl: expected one of {'|'.join(IMPLS)}, got {impl!r}")
  if impl == "auto":
    return "xla" if jax.default_backend() == "cpu" else "pallas"
  return impl


def resolve_target(impl: str, pallas_target: str | None) -> str:
  """Which tile rules apply: "xla", "tpu" (TPU and CPU interpret) or "gpu" (Triton)."""
  if impl == "xla":
    return "xla"
  if pallas_target is None:
    return "gpu" if jax.default_backend() == "gpu" else "tpu"
  if pallas_target not in ("tpu", "gpu"):
    raise ValueError(f"pallas_target: expected None, 'tpu' or 'gpu', got {pallas_target!r}")
  return pallas_target


def _segments(unit, segment):
  return jnp.ones_like(unit) if segment is None else segment


def prepare_attention(q_unit, kv_unit, q_segment=None, kv_segment=None, *, window_units=None,
                      sink_units=0, impl="auto", block_q=None, block_k=None, pallas_target=None):
  """Per-batch attention metadata, computed ONCE outside the layer scan.

  Args:
    q_unit, kv_unit: int32 `[batch, q_len]` / `[batch, kv_len]` unit ids.
    q_segment, kv_segment: int32 segment ids (0 = padding), None = one segment.
    window_units, sink_units, impl: as for `block_causal_attention`.
    block_q, block_k: tile sizes (default per target: `metadata.DEFAULT_TILES`).
    pallas_target: "tpu" | "gpu" kernel family for impl="pallas" (None = this backend's).
  Returns:
    An `AttentionMetadata` pytree to pass as `metadata=` to every
    `block_causal_attention` call of the batch; None for impl="reference".
  """
  impl = resolve_impl(impl)
  _check_window(window_units, sink_units)
  q_segment, kv_segment = _segments(q_unit, q_segment), _segments(kv_unit, kv_segment)
  for name, x in (("q_unit", q_unit), ("kv_unit", kv_unit)):
    if getattr(x, "ndim", None) != 2:
      raise ValueError(f"{name}: expected int32 [batch, len], got shape {getattr(x, 'shape', type(x))}")
  _check_ids(q_unit.shape[1], kv_unit.shape[1], q_unit.shape[0], q_unit, kv_unit, q_segment, kv_segment)
  md.check_layout(q_unit, q_segment, "q_unit", "q_segment")
  md.check_layout(kv_unit, kv_segment, "kv_unit", "kv_segment")
  if impl == "reference":
    return None
  target = resolve_target(impl, pallas_target)
  dq, dk = md.DEFAULT_TILES[target]
  block_q, block_k = block_q or dq, block_k or dk
  md.check_tiles(block_q, block_k, target)
  return md.build_metadata(q_unit, kv_unit, q_segment, kv_segment, window_units=window_units,
                           sink_units=sink_units, block_q=block_q, block_k=block_k, target=target)


def _check_metadata(meta, q_len, kv_len, window_units, sink_units, target, batch):
  if not isinstance(meta, md.AttentionMetadata):
    raise ValueError(f"metadata: expected the result of prepare_attention, got {type(meta).__name__}")
  want = dict(q_len=q_len, kv_len=kv_len, window_units=window_units, sink_units=sink_units, target=target)
  got = {key: getattr(meta, key) for key in want}
  if got != want or meta.fwd_num.shape[0] != batch:
    raise ValueError(f"metadata: built for {got} (batch {meta.fwd_num.shape[0]}), but this call has "
                     f"{want} (batch {batch}); call prepare_attention with the same arguments")


def block_causal_attention(q, k, v, *, q_unit, kv_unit, q_segment=None, kv_segment=None,
                           window_units=None, sink_units=0, impl="auto", scale=None, metadata=None,
                           block_q=None, block_k=None, pallas_target=None, interpret=None):
  """Block-causal attention (DESIGN §1, §4).

  Args:
    q: `[batch, q_len, heads, head_dim]`.
    k, v: `[batch, kv_len, kv_heads, head_dim]`, heads % kv_heads == 0 (GQA).
    q_unit, kv_unit: int32 `[batch, len]` unit ids (from 0 per segment).
    q_segment, kv_segment: int32 `[batch, len]` segment ids, 0 = padding;
      None = one segment. Decode: q is one unit, kv the cache (unwritten
      slots have segment 0), q_len != kv_len.
    window_units, sink_units: optional sliding window over units plus sinks.
    impl: "auto" | "reference" | "xla" | "pallas".
    scale: logit scale, default head_dim ** -0.5.
    metadata: `prepare_attention(...)` for these ids (same impl/tiles), or
      None to build it here (then once per call, e.g. once per layer).
    block_q, block_k, pallas_target: tiles and kernel family when metadata is None.
    interpret: pallas only: None (= True on CPU), True, or `pltpu.InterpretParams()`.
  Returns:
    `[batch, q_len, heads, head_dim]` in q's dtype; query rows that see no
    key (padding) are 0.
  """
  _check(q, k, v)
  _check_window(window_units, sink_units)
  q_segment, kv_segment = _segments(q_unit, q_segment), _segments(kv_unit, kv_segment)
  _check_ids(q.shape[1], k.shape[1], q.shape[0], q_unit, kv_unit, q_segment, kv_segment)
  impl = resolve_impl(impl)
  scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
  if impl == "reference":
    return reference_block_causal_attention(q, k, v, q_unit, kv_unit, q_segment, kv_segment,
                                            window_units=window_units, sink_units=sink_units, scale=scale)
  target = resolve_target(impl, pallas_target)
  if impl == "pallas":
    from wan_streamer_jax.kernels import pallas  # noqa: PLC0415 (keeps Pallas off the xla path)
    pallas.check_inputs(q, target, interpret)
  if metadata is None:
    metadata = prepare_attention(q_unit, kv_unit, q_segment, kv_segment, window_units=window_units,
                                 sink_units=sink_units, impl=impl, block_q=block_q, block_k=block_k,
                                 pallas_target=pallas_target)
  else:
    _check_metadata(metadata, q.shape[1], k.shape[1], window_units, sink_units, target, q.shape[0])
  tq, tk = metadata.q_len_padded, metadata.kv_len_padded
  qu, qs = md.pad_ids(q_unit, q_segment, tq)
  ku, ks = md.pad_ids(kv_unit, kv_segment, tk)
  pad = lambda x, n: x if x.shape[1] == n else jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0)))
  qp, kp, vp = pad(q, tq), pad(k, tk), pad(v, tk)
  st = Static(scale=scale, window_units=window_units, sink_units=sink_units,
              block_q=metadata.block_q, block_k=metadata.block_k)
  if impl == "xla":
    out = xla_attention(st, qp, kp, vp, (qu, qs, ku, ks), metadata.arrays())
  else:
    out = pallas.pallas_attention(st, qp, kp, vp, (qu, qs, ku, ks), metadata.arrays(),
                                  target=target, interpret=interpret)
  return out[:, :q.shape[1]]
