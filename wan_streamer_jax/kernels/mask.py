"""The block-causal visibility rule (DESIGN §1), stated once.

A key of unit `u` is visible to a query of unit `t` iff both are in the same
non-padding segment, `u <= t`, and -- with a window -- `t - u < window_units`
or `u < sink_units`. Unit ids count from 0 at the start of each segment.

`visible_broadcast` is the rule on already-broadcastable operands; every
implementation (the dense oracle, the chunked XLA loop and the Pallas kernels'
element mask on partially visible tiles) calls it, so the rule cannot drift.
"""

from __future__ import annotations



def visible_broadcast(qu, ku, qs, ks, *, window_units=None, sink_units=0):
  """The rule on operands that broadcast against each other.

  Args:
    qu, qs: query unit / segment ids, e.g. `[bq, 1]` (column).
    ku, ks: key unit / segment ids, e.g. `[1, bk]` (row).
  Returns:
    bool of the broadcast shape, e.g. `[bq, bk]`.
  """
  vis = (qs == ks) & (qs != 0) & (ku <= qu)
  if window_units is not None:
    vis &= ((qu - ku) < window_units) | (ku < sink_units)
  return vis


def visible(q_unit, kv_unit, q_segment, kv_segment, *, window_units=None, sink_units=0):
  """Boolean visibility, broadcasting `q_*[..., :, None]` against `kv_*[..., None, :]`.

  Args:
    q_unit, q_segment: int32 `[batch, q_len]`.
    kv_unit, kv_segment: int32 `[batch, kv_len]`.
  Returns:
    bool `[batch, q_len, kv_len]`.
  """
  return visible_broadcast(q_unit[..., :, None], kv_unit[..., None, :], q_segment[..., :, None],
                           kv_segment[..., None, :], window_units=window_units,
                           sink_units=sink_units)
