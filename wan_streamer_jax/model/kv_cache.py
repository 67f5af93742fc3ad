"""The decode-time KV cache: a ring buffer of whole units, keys after RoPE (DESIGN §1, §7).

One cache serves every layer (scanned with the layers, like the blocks):

    k, v         [layers, batch, capacity * L, kv_heads, head_dim]  compute dtype
    unit_ids     int32 [batch, capacity * L]   absolute unit of each cached token
    segment_ids  int32 [batch, capacity * L]   conversation id, 0 = empty slot

The ids are stored once, not per layer. `capacity = sink_units + ring_units`
units: units `0 .. sink_units - 1` of a conversation stay pinned in the first
slots; unit `u >= sink_units` lives in slot `sink_units + (u - sink_units) %
ring_units`. With `ring_units = window_units`, writing unit `t` overwrites unit
`t - window_units`, the newest unit the window no longer shows, so the cache
always holds exactly the keys a query of unit `t` may see (DESIGN §1), and a
conversation of any length runs in constant memory. Keys carry their absolute
unit position (RoPE is applied before they are cached), so nothing is re-rotated
when the ring wraps. Positions are not sorted along the ring, so the attention
kernel takes its exact-mask path (every tile, element mask from the ids).

Without a window (`window_units=None`) a cache needs an explicit capacity
`max_units`: streaming is then exact for conversations up to `max_units` units
and, past that, the ring drops the oldest non-sink units (a sliding window of
`max_units - sink_units` units, which the training forward never saw).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class KVCache(NamedTuple):
  """Per-layer keys/values of a pool of `batch` streams (see the module docstring)."""

  k: jax.Array
  v: jax.Array
  unit_ids: jax.Array
  segment_ids: jax.Array

  @property
  def capacity_tokens(self) -> int:
    return self.unit_ids.shape[1]


jax.export.register_namedtuple_serialization(KVCache, serialized_name="wan_streamer_jax.model.KVCache")


def cache_units(window_units: int | None, sink_units: int, max_units: int | None = None) -> int:
  """Units a cache holds: `sink_units + window_units`, or `max_units` without a window."""
  if window_units is None:
    if max_units is None:
      raise ValueError("max_units: model.window_units is None (attention over the whole conversation), "
                       "so a streaming cache needs an explicit capacity; expected an int > sink_units="
                       f"{sink_units} (or set model.window_units), got None")
    if not isinstance(max_units, int) or max_units <= sink_units:
      raise ValueError(f"max_units: expected an int > sink_units={sink_units}, got {max_units!r}")
    return max_units
  if max_units is not None and max_units != sink_units + window_units:
    raise ValueError(f"max_units: with model.window_units={window_units} the cache holds exactly "
                     f"sink_units + window_units = {sink_units + window_units} units; expected None or "
                     f"that value, got {max_units!r}")
  return sink_units + window_units


def init_cache(*, layers: int, batch: int, units: int, tokens_per_unit: int, kv_heads: int,
               head_dim: int, dtype) -> KVCache:
  """An empty cache (every slot segment 0) of `units` whole units per stream."""
  n = units * tokens_per_unit
  return KVCache(jnp.zeros((layers, batch, n, kv_heads, head_dim), dtype),
                 jnp.zeros((layers, batch, n, kv_heads, head_dim), dtype),
                 jnp.zeros((batch, n), jnp.int32), jnp.zeros((batch, n), jnp.int32))


def ring_offset(unit, *, sink_units: int, capacity_units: int, tokens_per_unit: int):
  """int32 `[batch]` token offset in the cache where unit `unit` (int32 `[batch]`) is written."""
  ring = capacity_units - sink_units
  slot = jnp.where(unit < sink_units, unit, sink_units + (unit - sink_units) % ring)
  return (slot * tokens_per_unit).astype(jnp.int32)


def write_rows(buf, rows, offset, keep):
  """Writes `rows` `[batch, n, ...]` into `buf` `[batch, N, ...]` at per-row `offset` `[batch]`.

  Rows where `keep` (bool `[batch]`) is False are rewritten with what they held,
  so their buffer is bit-identical afterwards. Touches `n` entries per row (a
  scatter of one unit), never the whole buffer.
  """
  n = rows.shape[1]
  old = jax.vmap(lambda b, o: lax.dynamic_slice_in_dim(b, o, n, 0))(buf, offset)
  keep = keep.reshape(keep.shape + (1,) * (rows.ndim - 1))
  new = jnp.where(keep, rows.astype(buf.dtype), old)
  return jax.vmap(lambda b, r, o: lax.dynamic_update_slice_in_dim(b, r, o, 0))(buf, new, offset)


def reset_rows(cache: KVCache, reset) -> KVCache:
  """Empties the streams where `reset` (bool `[batch]`): their slots get segment 0 (keys stay, masked)."""
  return cache._replace(segment_ids=jnp.where(reset[:, None], 0, cache.segment_ids),
                        unit_ids=jnp.where(reset[:, None], 0, cache.unit_ids))
