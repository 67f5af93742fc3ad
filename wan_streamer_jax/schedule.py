"""The unit layout (DESIGN §1): what every token slot of a 160 ms unit is.

One unit is six slot groups, always in the order
`video_in, audio_in, text_in, video_out, audio_out, text_out`. The layout of
one unit is static numpy computed once from the config, then tiled over units.
Model, data pipeline, losses, streaming engine and export read it; nobody
recomputes offsets by hand.

Next-unit prediction: slot `i` of unit `t` predicts the token of slot `i` of
unit `t + 1`. The `*_out` slots of unit `t` hold the model's own tokens of unit
`t - 1` (MISSING at unit 0).

Every slot rule lives here, for numpy (data pipeline) and jnp (model, streaming
engine, under jit) alike: `assemble_units` (per-group tokens -> unit layout) and
its inverse `split_units`, `slots_to_codes` / `codes_to_slots` (a group's slots
<-> the codec's code arrays), `shift_out_stream` (the out-stream shift),
`TiledLayout.positions` (RoPE `(t, h, w)`) and `vocab_mask` (the padded
vocabulary, shared by the loss and the sampler).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from wan_streamer_jax.config import (AUDIO_FRAMES_PER_UNIT, GROUPS, KINDS, TICKS_PER_UNIT, Config)

KIND_VIDEO, KIND_AUDIO, KIND_TEXT = 0, 1, 2
ROLE_IN, ROLE_OUT = 0, 1
OUT_GROUPS = tuple(g for g in GROUPS if g.endswith("_out"))
VOCAB_PAD = 128  # embedding / head tables are padded to a multiple of this (so `vocab` shards)


def _xp(*arrays):
  """numpy for host arrays (static layouts stay numpy under jit), jax.numpy for anything else."""
  if all(isinstance(a, (np.ndarray, np.generic, int, float)) or a is None for a in arrays):
    return np
  import jax.numpy as jnp
  return jnp


def padded_vocab(size: int) -> int:
  return -(-size // VOCAB_PAD) * VOCAB_PAD


@dataclasses.dataclass(frozen=True, eq=False)
class UnitLayout:
  """Per-slot static metadata of one unit; every array is `[tokens_per_unit]`.

  Attributes:
    group: int32 index into `GROUPS`.
    kind: int32, 0 video / 1 audio / 2 text.
    role: int32, 0 in (the user) / 1 out (the model).
    level: int32 codebook level (audio residual quantiser index; 0 otherwise).
    tick: int32 time offset inside the unit in 40 ms ticks (0..3).
    h, w: int32 latent grid position (video), 0 for audio and text.
    loss_weight: float32 cross-entropy weight of the slot's target.
    missing_id: int32 the MISSING id of the slot's vocabulary.
    vocab: int32 the size of the slot's vocabulary (ids are in [0, vocab)).
    group_slices: group name -> slice of that group inside the unit.
    vocab_sizes: kind name -> vocabulary size.
    num_levels: embedding rows for the codebook level (max(Q, 1)).
    video_grid: `(latent_h, latent_w)` of a video group's slots (row-major).
    audio_quantizers: Q, residual codes per 40 ms audio frame.
  """

  group: np.ndarray
  kind: np.ndarray
  role: np.ndarray
  level: np.ndarray
  tick: np.ndarray
  h: np.ndarray
  w: np.ndarray
  loss_weight: np.ndarray
  missing_id: np.ndarray
  vocab: np.ndarray
  group_slices: dict
  vocab_sizes: dict
  num_levels: int
  video_grid: tuple
  audio_quantizers: int

  @property
  def tokens_per_unit(self) -> int:
    return int(self.kind.shape[0])

  def tile(self, num_units: int) -> "TiledLayout":
    return TiledLayout(self, num_units)

  def group_names(self, kind: str) -> list:
    """Names of the groups of `kind`, in unit order (its `_in` group before its `_out` group)."""
    return [g for g in GROUPS if g.startswith(kind + "_")]

  def kind_groups(self, kind: str) -> list:
    """Slices (inside one unit) of the groups of `kind`, in unit order."""
    return [self.group_slices[g] for g in self.group_names(kind)]

  def take_kind(self, x, kind: str):
    """`[batch, units * L, ...]` -> `[batch, units * n_kind, ...]`: the kind's slots, in sequence order.

    Same order as `TiledLayout.kind_indices[kind]`, but built from static
    slices of a `[batch, units, L, ...]` view (cheap copies, no gather/scatter).
    """
    return self.take_groups(x, kind)

  def take_groups(self, x, kind: str, groups=None):
    """`take_kind` restricted to the kind's groups named in `groups` (None: all of them):
    `[batch, units * L, ...]` -> `[batch, units * n, ...]`, n the listed groups' slots per unit, in
    unit order (`[batch, 0, ...]` when none is listed)."""
    import jax.numpy as jnp
    xp = np if isinstance(x, np.ndarray) else jnp  # static numpy stays numpy under jit
    b, s = x.shape[:2]
    u = s // self.tokens_per_unit
    xu = x.reshape((b, u, self.tokens_per_unit) + x.shape[2:])
    parts = [xu[:, :, self.group_slices[g]] for g in self.group_names(kind) if groups is None or g in groups]
    if not parts:
      return xu[:, :, :0].reshape((b, 0) + x.shape[2:])
    out = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=2)
    return out.reshape((b, -1) + x.shape[2:])

  def group_size(self, group: str) -> int:
    s = self.group_slices[group]
    return s.stop - s.start

  def slice_in_kind(self, group: str, groups=None) -> slice:
    """Where `group`'s slots sit among its kind's slots of one unit (the order `take_kind` gives them;
    with `groups`, among the listed groups' slots: the order `take_groups(x, kind, groups)` gives them)."""
    kind = group.split("_")[0]
    names = [g for g in self.group_names(kind) if groups is None or g in groups or g == group]
    start = sum(self.group_size(g) for g in names[:names.index(group)])
    return slice(start, start + self.group_size(group))

  def describe(self) -> dict:
    return {g: self.group_size(g) for g in GROUPS}

  def missing(self, group: str) -> int:
    """The MISSING id of `group`'s vocabulary."""
    return int(self.missing_id[self.group_slices[group].start])

  def vocab_mask(self, kind: str) -> np.ndarray:
    """bool `[padded_vocab]`: True for the kind's real ids, False for the table padding."""
    n = self.vocab_sizes[kind]
    return np.arange(padded_vocab(n)) < n

  def code_shape(self, group: str, units: int) -> tuple:
    """Per-unit codec shape of `group` over `units` units (no batch): see `slots_to_codes`."""
    kind = group.split("_")[0]
    if kind == "audio":
      return (units * AUDIO_FRAMES_PER_UNIT, self.audio_quantizers)
    if kind == "video":
      return (units,) + tuple(self.video_grid)
    return (units, self.group_size(group))


@dataclasses.dataclass(frozen=True, eq=False)
class TiledLayout:
  """The unit layout tiled over `num_units` units: arrays are `[num_units * L]`."""

  unit: UnitLayout
  num_units: int

  @property
  def seq_len(self) -> int:
    return self.num_units * self.unit.tokens_per_unit

  def _tile(self, arr: np.ndarray) -> np.ndarray:
    return np.tile(arr, self.num_units)

  @functools.cached_property
  def unit_index(self) -> np.ndarray:
    """int32 `[seq]` unit index of every slot (from 0 at the sequence start)."""
    return np.repeat(np.arange(self.num_units, dtype=np.int32), self.unit.tokens_per_unit)

  def __getattr__(self, name):
    if name in ("group", "kind", "role", "level", "h", "w", "loss_weight", "missing_id", "vocab"):
      return self._tile(getattr(self.unit, name))
    raise AttributeError(name)

  def positions(self, unit_ids=None):
    """int32 `[..., seq, 3]` RoPE positions `(t, h, w)`; `t = unit * 4 + tick` (40 ms ticks).

    `unit_ids` (int32 `[..., seq]`, e.g. counting from 0 per packed segment, or a
    slot's absolute unit counter when streaming; numpy or jnp) default to the
    plain unit index. numpy in -> numpy out, jnp (traced) in -> jnp out.
    """
    u = self.unit_index if unit_ids is None else unit_ids
    xp = _xp(u)
    t = u * TICKS_PER_UNIT + self._tile(self.unit.tick)
    h = xp.broadcast_to(self._tile(self.unit.h), t.shape)
    w = xp.broadcast_to(self._tile(self.unit.w), t.shape)
    return xp.stack([t, h, w], axis=-1).astype(np.int32)

  @functools.cached_property
  def kind_indices(self) -> dict:
    """kind name -> int32 `[n_kind]` sequence positions of that kind's slots."""
    kind = self.kind
    return {k: np.nonzero(kind == i)[0].astype(np.int32) for i, k in enumerate(KINDS)}


@functools.lru_cache(maxsize=32)
def _build(cfg_key) -> UnitLayout:
  cfg = cfg_key.cfg
  vid, aud, txt = cfg.video, cfg.audio, cfg.text
  parts = {k: [] for k in ("group", "kind", "role", "level", "tick", "h", "w", "loss_weight", "missing_id")}
  slices = {}
  start = 0
  for gi, group in enumerate(GROUPS):
    kind_name, role_name = group.split("_")
    if kind_name == "video":
      hh, ww = np.meshgrid(np.arange(vid.latent_h), np.arange(vid.latent_w), indexing="ij")
      hh, ww = hh.reshape(-1), ww.reshape(-1)
      n = hh.size
      level = np.zeros(n)
      tick = np.zeros(n)  # one latent frame for the unit's 4 frames, placed at its first tick
      missing = vid.missing_id
      kind = KIND_VIDEO
    elif kind_name == "audio":
      q = aud.num_quantizers
      n = AUDIO_FRAMES_PER_UNIT * q
      frame = np.repeat(np.arange(AUDIO_FRAMES_PER_UNIT), q)  # frame-major, level-minor
      level = np.tile(np.arange(q), AUDIO_FRAMES_PER_UNIT)
      tick = frame
      hh = ww = np.zeros(n)
      missing = aud.missing_id
      kind = KIND_AUDIO
    else:
      n = txt.text_slots
      level = np.zeros(n)
      tick = (np.arange(n) * TICKS_PER_UNIT) // n  # bytes spread over the unit's ticks
      hh = ww = np.zeros(n)
      missing = txt.missing_id
      kind = KIND_TEXT
    parts["group"].append(np.full(n, gi))
    parts["kind"].append(np.full(n, kind))
    parts["role"].append(np.full(n, 0 if role_name == "in" else 1))
    parts["level"].append(level)
    parts["tick"].append(tick)
    parts["h"].append(hh)
    parts["w"].append(ww)
    parts["loss_weight"].append(np.full(n, cfg.loss.group_weight(group)))
    parts["missing_id"].append(np.full(n, missing))
    slices[group] = slice(start, start + n)
    start += n
  arrays = {k: np.concatenate(v).astype(np.float32 if k == "loss_weight" else np.int32)
            for k, v in parts.items()}
  vocab_sizes = (vid.vocab_size, aud.vocab_size, txt.vocab_size)
  arrays["vocab"] = np.asarray(vocab_sizes, np.int32)[arrays["kind"]]
  for a in arrays.values():
    a.setflags(write=False)
  return UnitLayout(**arrays, group_slices=slices,
                    vocab_sizes=dict(zip(KINDS, vocab_sizes)),
                    num_levels=max(aud.num_quantizers, 1),
                    video_grid=(vid.latent_h, vid.latent_w), audio_quantizers=aud.num_quantizers)


@dataclasses.dataclass(frozen=True)
class _Key:
  cfg: Config

  def __hash__(self):
    return hash((self.cfg.video, self.cfg.audio, self.cfg.text, self.cfg.loss))

  def __eq__(self, other):
    c, o = self.cfg, other.cfg
    return (c.video, c.audio, c.text, c.loss) == (o.video, o.audio, o.text, o.loss)


def unit_layout(cfg: Config) -> UnitLayout:
  """The static layout of one unit for `cfg` (cached)."""
  return _build(_Key(cfg))


def next_unit_targets(tokens, segment_ids, tokens_per_unit: int, unit_ids=None):
  """Targets and validity for next-unit prediction.

  Args:
    tokens: int32 `[batch, seq]`, `seq` a multiple of `tokens_per_unit`.
    segment_ids: int32 `[batch, seq]` packed-conversation ids (0 = padding),
      constant over each unit.
    tokens_per_unit: L.
    unit_ids: optional int32 `[batch, seq]` unit index in the conversation; a
      jump (sink units followed by a later window) is not a next unit.
  Returns:
    targets int32 `[batch, seq]` (token of the same slot one unit later) and
    valid bool `[batch, seq]` (the next unit exists in the same segment).
  """
  import jax.numpy as jnp
  L = tokens_per_unit
  later = lambda x: jnp.concatenate([x[:, L:], jnp.zeros_like(x[:, :L])], axis=1)  # noqa: E731
  targets = later(tokens)
  valid = (segment_ids != 0) & (later(segment_ids) == segment_ids)
  if unit_ids is not None:
    valid &= later(unit_ids) == unit_ids + 1
  return targets, valid


def assemble_units(layout: UnitLayout, streams: dict):
  """Interleaves per-group token arrays into the unit layout (numpy or jnp).

  Args:
    layout: the unit layout.
    streams: group name -> int `[..., units, group_size]` tokens; a missing
      group (or None) is filled with its MISSING id. Out groups must already be
      shifted (unit t holds the model's tokens of unit t - 1: `shift_out_stream`).
  Returns:
    int32 `[..., units * tokens_per_unit]` (numpy if every stream is numpy, else jnp).
  """
  given = [v for v in streams.values() if v is not None]
  if not given:
    raise ValueError("streams: expected at least one group's tokens, got none")
  unknown = sorted(set(streams) - set(GROUPS))
  if unknown:
    raise ValueError(f"streams: expected group names from {GROUPS}, got {unknown}")
  xp = _xp(*given)
  lead = tuple(given[0].shape[:-1])
  parts = []
  for g in GROUPS:
    n = layout.group_size(g)
    val = streams.get(g)
    if val is None:
      parts.append(xp.full(lead + (n,), layout.missing(g), np.int32))
      continue
    if tuple(val.shape) != lead + (n,):
      raise ValueError(f"stream `{g}`: expected shape {lead + (n,)}, got {tuple(val.shape)}")
    parts.append(xp.asarray(val).astype(np.int32))
  out = xp.concatenate(parts, axis=-1)
  return out.reshape(lead[:-1] + (lead[-1] * layout.tokens_per_unit,))


def split_units(layout: UnitLayout, tokens) -> dict:
  """Inverse of `assemble_units`: int `[..., units * L]` -> group -> `[..., units, group_size]`."""
  L = layout.tokens_per_unit
  if tokens.shape[-1] % L:
    raise ValueError(f"tokens: expected a last axis that is a multiple of tokens_per_unit={L}, "
                     f"got {tokens.shape[-1]}")
  tu = tokens.reshape(tuple(tokens.shape[:-1]) + (tokens.shape[-1] // L, L))
  return {g: tu[..., layout.group_slices[g]] for g in GROUPS}


def slots_to_codes(layout: UnitLayout, group: str, slots):
  """A group's slots `[..., units, group_size]` -> the codec's code array (numpy or jnp).

  audio `[..., units * 4, Q]` (frame-major, level-minor), video `[..., units, h, w]`
  (row-major latent grid), text `[..., units, text_slots]` (unchanged).
  """
  units = slots.shape[-2]
  return slots.reshape(tuple(slots.shape[:-2]) + layout.code_shape(group, units))


def codes_to_slots(layout: UnitLayout, group: str, codes):
  """Inverse of `slots_to_codes`: the codec's codes -> `[..., units, group_size]`."""
  kind = group.split("_")[0]
  n = layout.group_size(group)
  nd = 3 if kind == "video" else 2
  lead = tuple(codes.shape[:-nd])
  size = int(np.prod(codes.shape[-nd:]))
  if size % n:
    raise ValueError(f"codes of `{group}`: expected whole units of {n} slots, got shape {tuple(codes.shape)}")
  return codes.reshape(lead + (size // n, n))


def shift_units(x, k: int, fill, axis: int):
  """`x` moved `k >= 0` units later along its unit `axis`: unit t holds unit t - k, the first k units
  `fill`, the last k dropped (same shape). numpy or jnp."""
  if k == 0:
    return x
  xp = _xp(x)
  axis = axis % x.ndim
  head = xp.full(x.shape[:axis] + (min(k, x.shape[axis]),) + x.shape[axis + 1:], fill, x.dtype)
  body = x[(slice(None),) * axis + (slice(0, max(x.shape[axis] - k, 0)),)]
  return xp.concatenate([head, body], axis=axis)


def shift_out_stream(tokens, missing_id: int):
  """`[..., units, n]` the model's tokens of unit t -> the out-slot content of unit t (its unit t - 1).

  Unit 0 gets `missing_id` (no previous output). numpy or jnp.
  """
  return shift_units(tokens, 1, missing_id, axis=-2)
