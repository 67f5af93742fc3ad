"""Tile-visiting metadata: which key tiles each query tile visits, and which need a mask.

Layout contract (checked by `check_layout` whenever ids are concrete): along
the sequence, every non-padding segment is one contiguous run, segment ids
increase from run to run (padding, id 0, may sit anywhere between runs), and
unit ids never decrease inside a run. Under it the keys visible to a query of
segment `s` and unit `t` are, in key positions, exactly

  no window:   [seg_start, k_end)                      k_end = end of the last unit <= t
  window W:    [seg_start, sink_end) U [win_start, k_end)
               sink_end  = end of the keys with unit < min(S, t + 1)
               win_start = first key with unit > t - W

found by binary search on the key ids (O(q_len log kv_len), no dense mask).
The contract buys speed, not correctness: a kv row that breaks it (only
possible under jit, where ids cannot be checked -- e.g. a ring-buffer cache) is
detected in O(kv_len) (`layout_ok`) and then visits every tile with the exact
element mask. Queries need no contract (each searches the keys on its own).

From the intervals, per (query tile, key tile):  visited = some query of the
tile sees some key of the tile; full = every query of the tile sees every key
of the tile; partial = visited and not full (the element mask applies there
only). Cost O(q_len * n_k_tiles) compares, once per batch.

The tables are compacted per query tile into the list of key tiles to visit
(`fwd_*`, for the forward and dq passes) and per key tile into the list of
query tiles that see it (`bwd_*`, for the dk/dv pass). Steps past the end of a
list repeat its last tile, so a kernel's index map fetches nothing new there.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

_INT_MAX = np.iinfo(np.int32).max
_INT_MIN = np.iinfo(np.int32).min

# (block_q, block_k) defaults per target. "tpu" rules also govern the CPU
# interpret modes (same kernel); "gpu" is the Triton loop kernel; "xla" the
# chunked jnp implementation.
DEFAULT_TILES = {"xla": (128, 128), "tpu": (512, 512), "gpu": (64, 64)}


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _next_pow2(x: int) -> int:
  return 1 << max(0, (x - 1).bit_length())


def check_tiles(block_q: int, block_k: int, target: str) -> None:
  """ValueError naming the tile argument that does not fit `target`."""
  for name, val in (("block_q", block_q), ("block_k", block_k)):
    if not isinstance(val, (int, np.integer)) or val <= 0:
      raise ValueError(f"{name}: expected a positive int, got {val!r}")
    if target == "tpu" and val % 128:
      raise ValueError(f"{name}: TPU (and its interpret modes) need tiles that are multiples of 128 "
                       f"(the last two block dims must be divisible by (8, 128) or full), got {val}")
    if target == "gpu" and (val < 16 or val & (val - 1)):
      raise ValueError(f"{name}: the GPU (Triton) kernel needs a power of two >= 16, got {val}")
    if target == "xla" and val % 8:
      raise ValueError(f"{name}: the xla implementation needs a multiple of 8, got {val}")


def effective_tiles(q_len: int, kv_len: int, block_q: int, block_k: int, target: str):
  """Tiles actually used: the requested ones, shrunk to one tile for short sequences.

  Returns (block_q, block_k, q_len_padded, kv_len_padded).
  """
  if target == "gpu":
    bq, bk = min(block_q, _next_pow2(max(q_len, 16))), min(block_k, _next_pow2(max(kv_len, 16)))
  else:
    bq = min(block_q, _round_up(q_len, 8))
    bk = min(block_k, _round_up(kv_len, 128 if target == "tpu" else 8))
  return bq, bk, _round_up(q_len, bq), _round_up(kv_len, bk)


def check_layout(unit, segment, unit_name: str, segment_name: str) -> None:
  """Rejects layouts outside the contract above; a no-op for traced ids."""
  if isinstance(unit, jax.core.Tracer) or isinstance(segment, jax.core.Tracer):
    return
  u, s = np.asarray(unit), np.asarray(segment)
  same = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] != 0)
  bad = np.argwhere(same & (u[:, 1:] < u[:, :-1]))
  if len(bad):
    b, p = bad[0]
    raise ValueError(f"{unit_name}: unit ids decrease inside segment {s[b, p + 1]} of batch row {b} "
                     f"at position {p + 1} ({u[b, p]} -> {u[b, p + 1]})")
  for b in range(s.shape[0]):
    pos = np.flatnonzero(s[b])
    if len(pos) < 2:
      continue
    ids = s[b, pos]
    change = ids[1:] != ids[:-1]
    resumed = ~change & (np.diff(pos) > 1)
    bad = np.flatnonzero((change & (ids[1:] < ids[:-1])) | resumed)
    if len(bad):
      p = pos[bad[0] + 1]
      raise ValueError(f"{segment_name}: each non-padding segment must be one contiguous run and ids "
                       f"must increase from run to run; batch row {b}, position {p} has segment "
                       f"{s[b, p]} after segment {ids[bad[0]]}")


def pad_ids(unit, segment, length: int):
  """Pads `[batch, n]` ids to `[batch, length]` with padding (unit 0, segment 0)."""
  extra = length - unit.shape[1]
  if extra == 0:
    return unit, segment
  return jnp.pad(unit, ((0, 0), (0, extra))), jnp.pad(segment, ((0, 0), (0, extra)))


def _search(key_seg, key_unit, seg, unit, *, right: bool):
  """Vectorised lexicographic binary search.

  Args:
    key_seg, key_unit: int32 `[batch, n]`, (seg, unit) pairs sorted ascending.
    seg, unit: int32 `[batch, m]` targets.
  Returns:
    int32 `[batch, m]`: number of keys < target (right=False) or <= target.
  """
  n = key_seg.shape[1]

  def halve(_, lohi):
    lo, hi = lohi
    mid = (lo + hi) // 2
    idx = jnp.minimum(mid, n - 1)
    ms = jnp.take_along_axis(key_seg, idx, axis=1)
    mu = jnp.take_along_axis(key_unit, idx, axis=1)
    below = (ms < seg) | ((ms == seg) & ((mu <= unit) if right else (mu < unit)))
    go = below & (lo < hi)
    return jnp.where(go, mid + 1, lo), jnp.where(go | (lo >= hi), hi, mid)

  init = (jnp.zeros(seg.shape, jnp.int32), jnp.full(seg.shape, n, jnp.int32))
  lo, _ = jax.lax.fori_loop(0, max(1, n.bit_length()), halve, init)
  return lo


def _sort_keys(kv_unit, kv_segment):
  """(seg, unit) keys that are sorted when the kv layout keeps the contract.

  Padding takes (previous segment, +inf) so it never falls inside an interval.
  """
  key_seg = jax.lax.cummax(kv_segment, axis=1)
  return key_seg, jnp.where(kv_segment == 0, _INT_MAX, kv_unit)


def layout_ok(kv_unit, kv_segment):
  """bool `[batch]`: does each kv row keep the contract (so its intervals are exact)?

  O(kv_len), jit-friendly: the traced counterpart of `check_layout`.
  """
  key_seg, key_unit = _sort_keys(kv_unit, kv_segment)
  own = (kv_segment == 0) | (kv_segment == key_seg)  # no segment id below an earlier one
  sorted_ = (key_seg[:, 1:] > key_seg[:, :-1]) | (
      (key_seg[:, 1:] == key_seg[:, :-1]) & (key_unit[:, 1:] >= key_unit[:, :-1]))
  return jnp.all(own, axis=1) & jnp.all(sorted_, axis=1)


def key_intervals(q_unit, kv_unit, q_segment, kv_segment, *, window_units=None, sink_units=0):
  """Per-query visible key intervals (module docstring).

  Returns:
    int32 `[batch, q_len, 4]`: `(lo1, hi1, lo2, hi2)`, two disjoint,
    non-adjacent half-open intervals (an empty one has lo == hi); padding
    queries get two empty intervals.
  """
  key_seg, key_unit = _sort_keys(kv_unit, kv_segment)
  s, t = q_segment, q_unit
  start = _search(key_seg, key_unit, s, jnp.full_like(t, _INT_MIN), right=False)
  end = _search(key_seg, key_unit, s, t, right=True)
  if window_units is None:
    lo1, hi1, lo2, hi2 = start, end, end, end
  else:
    sink_end = _search(key_seg, key_unit, s, jnp.minimum(sink_units, t + 1), right=False)
    win_start = _search(key_seg, key_unit, s, t - window_units + 1, right=False)
    lo1, hi1, lo2, hi2 = start, sink_end, win_start, end
    merge = lo2 <= hi1
    hi1 = jnp.where(merge, jnp.maximum(hi1, hi2), hi1)
    lo2 = jnp.where(merge, hi2, lo2)
  out = jnp.stack([lo1, hi1, lo2, hi2], axis=-1)
  return jnp.where((s == 0)[..., None], 0, out).astype(jnp.int32)


def _range_counts(starts, ends, rows_per_tile: int, n_cols: int):
  """For each row tile, how many of its rows cover each column: `[batch, n_row_tiles, n_cols]`.

  Row r covers columns `[starts[r], ends[r])` (nothing where starts >= ends).
  O(rows * n_cols) compares -- tiles, not tokens, along the columns.
  """
  cols = jnp.arange(n_cols, dtype=jnp.int32)
  cover = (starts[..., None] <= cols) & (cols < ends[..., None])  # [b, rows, n_cols]
  b, n = starts.shape
  return jnp.sum(cover.reshape(b, n // rows_per_tile, rows_per_tile, n_cols), axis=2, dtype=jnp.int32)


def tile_tables(intervals, *, block_q: int, block_k: int, n_k_tiles: int):
  """Per (query tile, key tile): `visited` and `partial` bool `[batch, n_q_tiles, n_k_tiles]`.

  `intervals` is `[batch, q_len_padded, 4]` with q_len_padded % block_q == 0.
  """
  nq = intervals.shape[1] // block_q
  touch = jnp.zeros(intervals.shape[:1] + (nq, n_k_tiles), jnp.int32)
  inside = jnp.zeros_like(touch)
  for lo, hi in ((intervals[..., 0], intervals[..., 1]), (intervals[..., 2], intervals[..., 3])):
    nonempty = lo < hi
    t0, t1 = lo // block_k, (hi - 1) // block_k + 1
    touch += _range_counts(jnp.where(nonempty, t0, 0), jnp.where(nonempty, t1, 0), block_q, n_k_tiles)
    c0, c1 = (lo + block_k - 1) // block_k, hi // block_k
    inside += _range_counts(c0, c1, block_q, n_k_tiles)
  visited = touch > 0
  return visited, visited & (inside < block_q)


def compact(visited, partial):
  """Per row, the visited columns in order, then the last one repeated.

  Args:
    visited, partial: bool `[batch, rows, cols]`.
  Returns:
    (tile int32 `[batch, rows, cols]`, needs_mask int32 `[batch, rows, cols]`,
     num int32 `[batch, rows]`).
  """
  n = visited.shape[-1]
  order = jnp.argsort(jnp.logical_not(visited), axis=-1, stable=True).astype(jnp.int32)
  num = jnp.sum(visited, axis=-1, dtype=jnp.int32)
  last = jnp.take_along_axis(order, jnp.maximum(num - 1, 0)[..., None], axis=-1)
  active = jnp.arange(n, dtype=jnp.int32) < num[..., None]
  tile = jnp.where(active, order, last)
  needs_mask = jnp.take_along_axis(partial, tile, axis=-1) & active
  return tile, needs_mask.astype(jnp.int32), num


def _static(**kw):
  return dataclasses.field(metadata=dict(static=True), **kw)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMetadata:
  """Per-batch tile lists (arrays) plus the static facts they were built for.

  fwd_tile, fwd_mask: int32 `[batch, n_q_tiles, n_k_tiles]`; fwd_num `[batch, n_q_tiles]`.
  bwd_tile, bwd_mask: int32 `[batch, n_k_tiles, n_q_tiles]`; bwd_num `[batch, n_k_tiles]`.
  """

  fwd_tile: jax.Array
  fwd_mask: jax.Array
  fwd_num: jax.Array
  bwd_tile: jax.Array
  bwd_mask: jax.Array
  bwd_num: jax.Array
  target: str = _static()
  block_q: int = _static()
  block_k: int = _static()
  q_len: int = _static()
  kv_len: int = _static()
  window_units: int | None = _static()
  sink_units: int = _static()

  @property
  def q_len_padded(self) -> int:
    return self.fwd_tile.shape[1] * self.block_q

  @property
  def kv_len_padded(self) -> int:
    return self.fwd_tile.shape[2] * self.block_k

  def arrays(self):
    return (self.fwd_tile, self.fwd_mask, self.fwd_num, self.bwd_tile, self.bwd_mask, self.bwd_num)

  def visited_tiles(self):
    """Total (query tile, key tile) pairs visited, summed over the batch."""
    return jnp.sum(self.fwd_num)

  def visited_fraction(self):
    return self.visited_tiles() / self.fwd_tile.size


def build_metadata(q_unit, kv_unit, q_segment, kv_segment, *, window_units, sink_units, block_q,
                   block_k, target) -> AttentionMetadata:
  """The metadata for one batch of ids; jit-friendly (shapes static, ids traced)."""
  q_len, kv_len = q_unit.shape[1], kv_unit.shape[1]
  bq, bk, tq, tk = effective_tiles(q_len, kv_len, block_q, block_k, target)
  qu, qs = pad_ids(q_unit, q_segment, tq)
  iv = key_intervals(qu, kv_unit, qs, kv_segment, window_units=window_units, sink_units=sink_units)
  visited, partial = tile_tables(iv, block_q=bq, block_k=bk, n_k_tiles=tk // bk)
  # A row that breaks the contract (only possible with traced ids, e.g. a ring-buffer
  # KV cache) visits every tile under the exact element mask: slower, never wrong.
  broken = ~layout_ok(kv_unit, kv_segment)[:, None, None]
  visited, partial = visited | broken, partial | broken
  fwd = compact(visited, partial)
  bwd = compact(visited.swapaxes(1, 2), partial.swapaxes(1, 2))
  return AttentionMetadata(*fwd, *bwd, target=target, block_q=bq, block_k=bk, q_len=q_len,
                           kv_len=kv_len, window_units=window_units, sink_units=sink_units)
