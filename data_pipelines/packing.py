"""Token windows in the unit layout, packed several conversations per sequence.

`window_tokens(layout, example, start, n)` turns units `[start, start + n)` of
a token example (`token_data` structure) into the interleaved unit layout
(`schedule.assemble_units`): int32 `[n * L]`. Out streams are shifted by one
unit (`schedule.shift_out_stream`: unit t holds the model's tokens of unit
t - 1; MISSING only at the conversation's unit 0), so a window that starts
mid-conversation sees the true previous output. Codec arrays become slots
through `schedule.codes_to_slots` (audio `[units * 4, Q]` -> `[units, 4 * Q]`,
frame-major, level-minor); `video_in` is MISSING where `video_in_present` is False.

`pack_windows(ds, seq_units, L)` packs windows (whole units) first-fit into
sequences of `S = seq_units * L` tokens and returns per sequence:
  tokens      int32 [S]   padding 0
  segment_ids int32 [S]   1, 2, ... per packed conversation; 0 = padding
  unit_ids    int32 [S]   unit index inside its segment (restarts at 0); 0 on padding
"""

from __future__ import annotations

import grain
import numpy as np

from wan_streamer_jax import schedule
from wan_streamer_jax.config import AUDIO_FRAMES_PER_UNIT, GROUPS


def window_tokens(layout: schedule.UnitLayout, ex: dict, start: int, n: int) -> np.ndarray:
  """Units `[start, start + n)` of token example `ex` -> int32 `[n * tokens_per_unit]`."""
  units = int(ex["num_units"])
  if not (0 <= start and start + n <= units):
    raise ValueError(f"window [{start}, {start + n}) outside a conversation of {units} units")
  streams = {}
  for group in GROUPS:
    role = group.split("_")[1]
    # out streams: shift the whole conversation (unit t holds unit t - 1), then cut the window
    lo = start if role == "in" else start - 1
    a, b = max(lo, 0), start + n
    if group.startswith("audio"):  # codec frames [units * 4, Q] -> slots [units, 4 * Q]
      slots = schedule.codes_to_slots(layout, group, np.asarray(ex[group])[a * AUDIO_FRAMES_PER_UNIT:
                                                                            b * AUDIO_FRAMES_PER_UNIT])
    else:  # video (row-major grid, flattened) and text are stored as slots already
      slots = np.asarray(ex[group])[a:b]
    if group == "video_in" and "video_in_present" in ex:
      slots = np.where(np.asarray(ex["video_in_present"])[a:b, None], slots, layout.missing(group))
    if role == "out":
      slots = schedule.shift_out_stream(slots, layout.missing(group))[start - a:]
    streams[group] = slots
  return schedule.assemble_units(layout, streams)


class TokenWindow(grain.transforms.RandomMap):
  """Token example -> {"tokens": int32 [n * L]} for a random window of n = min(max_units, units) units."""

  def __init__(self, layout: schedule.UnitLayout, max_units: int):
    self.layout, self.max_units = layout, int(max_units)

  def random_map(self, ex: dict, rng: np.random.Generator) -> dict:
    units = int(ex["num_units"])
    n = min(self.max_units, units)
    start = int(rng.integers(0, units - n + 1))
    return {"tokens": window_tokens(self.layout, ex, start, n)}


class _Finalize(grain.transforms.Map):
  def __init__(self, tokens_per_unit: int):
    self.L = int(tokens_per_unit)

  def map(self, packed: dict) -> dict:
    seg = packed["tokens_segment_ids"].astype(np.int32)
    return {"tokens": packed["tokens"].astype(np.int32), "segment_ids": seg,
            "unit_ids": np.where(seg > 0, packed["tokens_positions"] // self.L, 0).astype(np.int32)}


def pack_windows(ds: grain.IterDataset, seq_units: int, tokens_per_unit: int, num_packing_bins: int = 4,
                 seed: int = 0) -> grain.IterDataset:
  """Packs `{"tokens": [n * L]}` windows (n <= seq_units) into `{"tokens", "segment_ids", "unit_ids"}` `[S]`."""
  L = int(tokens_per_unit)
  packed = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct={"tokens": seq_units * L}, num_packing_bins=num_packing_bins, seed=seed,
      shuffle_bins=False)
  return packed.map(_Finalize(L))
