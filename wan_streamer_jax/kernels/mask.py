"""The block-causal visibility rule (DESIGN §1), stated once.

A key of unit `u` is visible to a query of unit `t` iff both are in the same
non-padding segment, `u <= t`, and -- with a window -- `t - u < window_units`
or `u < sink_units`. Unit ids count from 0 at the start of each segment.
"""

from __future__ import annotations

import jax.numpy as jnp


def visible(q_unit, kv_unit, q_segment, kv_segment, *, window_units=None, sink_units=0):
  """Boolean visibility, broadcasting `q_*[..., :, None]` against `kv_*[..., None, :]`.

  Args:
    q_unit, q_segment: int32 `[batch, q_len]`.
    kv_unit, kv_segment: int32 `[batch, kv_len]`.
  Returns:
    bool `[batch, q_len, kv_len]`.
  """
  qu, ku = q_unit[..., :, None], kv_unit[..., None, :]
  qs, ks = q_segment[..., :, None], kv_segment[..., None, :]
  vis = (qs == ks) & (qs != 0) & (ku <= qu)
  if window_units is not None:
    vis &= ((qu - ku) < window_units) | (ku < sink_units)
  return vis


def default_segments(unit):
  """All-ones segment ids (one segment, no padding) shaped like `unit`."""
  return jnp.ones_like(unit)
