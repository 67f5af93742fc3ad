"""Token windows in the unit layout, packed several conversations per sequence.

`window_tokens(layout, example, start, n)` turns units `[start, start + n)` of
a token example (`token_data` structure) into the interleaved unit layout
(`schedule.assemble_units`): int32 `[n * L]`. Out streams are shifted by one
unit (`schedule.shift_out_stream`: unit t holds the model's tokens of unit
t - 1; MISSING only at the conversation's unit 0), so a window that starts
mid-conversation sees the true previous output. Codec arrays become slots
through `schedule.codes_to_slots` (audio `[units * 4, Q]` -> `[units, 4 * Q]`,
frame-major, level-minor); `video_in` is MISSING where `video_in_present` is False. With
`text_lead = k` (`text.out_lead_units`) the model's text is the corpus' moved k units earlier
(`text_slots.lead_text`): its words are due k units before their speech.

`pack_windows(ds, seq_units, L)` packs windows (whole units) first-fit into
sequences of `S = seq_units * L` tokens and returns per sequence:
  tokens      int32 [S]   padding 0
  segment_ids int32 [S]   1, 2, ... per packed conversation; 0 = padding
  unit_ids    int32 [S]   unit index inside its segment (restarts at 0); 0 on padding
"""

from __future__ import annotations

import grain
import numpy as np

from data_pipelines import loss_marks, text_slots
from wan_streamer_jax import schedule
from wan_streamer_jax.config import AUDIO_FRAMES_PER_UNIT, GROUPS, TextConfig


def window_tokens(layout: schedule.UnitLayout, ex: dict, start: int, n: int, text_lead: int = 0) -> np.ndarray:
  """Units `[start, start + n)` of token example `ex` -> int32 `[n * tokens_per_unit]`; `text_lead`: the
  model's text (text_out) leads its speech by that many units."""
  units = int(ex["num_units"])
  if not (0 <= start and start + n <= units):
    raise ValueError(f"window [{start}, {start + n}) outside a conversation of {units} units")
  if text_lead:
    ex = {**ex, "text_out": text_slots.lead_text(ex["text_out"], text_lead)}
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


def heard_targets(ex: dict) -> dict:
  """`ex` with `text_in` as `loss.text_in_target="heard"` wants it for targets: a unit's typed tokens where
  it has any, else its words as heard (`heard_text`: bytes, WORD_END, END_OF_TURN or PAD)."""
  if "heard_text" not in ex:
    raise ValueError("loss.text_in_target='heard': the token example has no 'heard_text' field (tokens "
                     "written before it existed, or a corpus without metadata); re-tokenise the corpus "
                     f"(fields: {sorted(ex)})")
  text_in = np.asarray(ex["text_in"])
  typed = ((text_in != TextConfig.PAD) & (text_in != TextConfig.MISSING)).any(axis=-1, keepdims=True)
  return {**ex, "text_in": np.where(typed, text_in, np.asarray(ex["heard_text"])).astype(np.int32)}


class TokenWindow(grain.transforms.RandomMap):
  """Token example -> {"tokens", "unit_ids": int32 [n * L]}, n = min(max_units, units) units.

  With `heard=True` also "target_tokens" int32 `[n * L]`: the same window with text_in replaced by
  `heard_targets` (the loss reads targets from it; the model still reads `tokens`). `text_lead`: the
  model's text leads its speech by that many units (`text.out_lead_units`, `text_slots.lead_text`).
  `targets=True` (or heard, or own_swap > 0) emits "target_tokens" (without heard: a copy of the clean
  window). `answers` / `pauses` / `stops`: emits "loss_marks" int32 `[n * L]` (`loss_marks.window_marks`: the
  answer's reply for `loss.answer_weight`, the user's pauses / stops for `loss.pause_weight` / `stop_weight`).
  `own_swap = p`: each unit's audio_out / video_out *input* slots (the model's own voice and face) are,
  with probability p, another unit's of the window (`train.own_stream_swap`; targets clean).

  Without sinks: a random window of n units, unit ids from 0 at its start. With
  `sink_units = k > 0` (streaming with an attention window keeps the
  conversation's first k units as sinks): the conversation's units `[0, k)`
  followed by a random run `[s, s + n - k)`, `s >= k`, with their absolute
  unit ids (the sink rule `unit < k` and RoPE then see what streaming sees;
  the loss skips the target across the gap, see `schedule.next_unit_targets`).
  """

  def __init__(self, layout: schedule.UnitLayout, max_units: int, sink_units: int = 0, heard: bool = False,
               text_lead: int = 0, targets: bool = False, own_swap: float = 0.0, answers: bool = False,
               pauses: bool = False, stops: bool = False):
    if sink_units and not sink_units < max_units:
      raise ValueError(f"sink_units: expected fewer than the window's {max_units} units, got {sink_units}")
    self.layout, self.max_units, self.sinks, self.heard = layout, int(max_units), int(sink_units), bool(heard)
    self.text_lead, self.own_swap = int(text_lead), float(own_swap)
    self.answers, self.pauses, self.stops = bool(answers), bool(pauses), bool(stops)
    self.targets = bool(targets or heard or own_swap > 0)
    self.own_slots = np.isin(layout.group, [GROUPS.index("audio_out"), GROUPS.index("video_out")])

  def _cut(self, ex: dict, runs) -> np.ndarray:
    return np.concatenate([window_tokens(self.layout, ex, a, m) for a, m in runs])

  def random_map(self, ex: dict, rng: np.random.Generator) -> dict:
    if self.text_lead:  # once per example (the heard targets below keep the led text_out)
      ex = {**ex, "text_out": text_slots.lead_text(ex["text_out"], self.text_lead)}
    units = int(ex["num_units"])
    n, L, k = min(self.max_units, units), self.layout.tokens_per_unit, self.sinks
    if k and units > n:
      start = int(rng.integers(k, units - (n - k) + 1))
      runs = [(0, k), (start, n - k)]
      ids = np.concatenate([np.arange(k), np.arange(start, start + n - k)])
    else:
      start = int(rng.integers(0, units - n + 1))
      runs, ids = [(start, n)], np.arange(n)
    out = {"tokens": self._cut(ex, runs), "unit_ids": np.repeat(ids, L).astype(np.int32)}
    if self.targets:
      out["target_tokens"] = self._cut(heard_targets(ex), runs) if self.heard else out["tokens"].copy()
    if self.answers or self.pauses or self.stops:
      due = dict(ex, answer_unit=int(ex.get("answer_unit", -1)) - self.text_lead) if self.text_lead else ex
      marks = loss_marks.unit_marks(due, self.answers, self.pauses, self.stops)  # once per example, cut per run
      out["loss_marks"] = np.concatenate([loss_marks.window_marks(self.layout, marks, a, m) for a, m in runs])
    if self.own_swap > 0:  # the model's own voice / face inputs of some units <- another unit's
      units_in = out["tokens"].reshape(n, L)
      clean = units_in.copy()
      for u in np.flatnonzero(rng.random(n) < self.own_swap):
        units_in[u, self.own_slots] = clean[int(rng.integers(n)), self.own_slots]
    return out


class _Finalize(grain.transforms.Map):
  def __init__(self, tokens_per_unit: int):
    self.L = int(tokens_per_unit)

  def map(self, packed: dict) -> dict:
    seg = packed["tokens_segment_ids"].astype(np.int32)
    units = packed["unit_ids"] if "unit_ids" in packed else packed["tokens_positions"] // self.L
    out = {"tokens": packed["tokens"].astype(np.int32), "segment_ids": seg,
           "unit_ids": np.where(seg > 0, units, 0).astype(np.int32)}
    for k in ("target_tokens", "loss_marks"):
      if k in packed:
        out[k] = packed[k].astype(np.int32)
    return out


def pack_windows(ds: grain.IterDataset, seq_units: int, tokens_per_unit: int, num_packing_bins: int = 4,
                 seed: int = 0, with_unit_ids: bool = True, with_targets: bool = False,
                 with_marks: bool = False) -> grain.IterDataset:
  """Packs `{"tokens", "unit_ids": [n * L]}` windows (n <= seq_units; `TokenWindow`'s) into `{"tokens",
  "segment_ids", "unit_ids"}` `[S]`; `with_unit_ids=False`: windows of tokens only, unit ids from 0 each;
  `with_targets` / `with_marks`: the windows' `target_tokens` / `loss_marks` are packed alongside (the
  same positions)."""
  L = int(tokens_per_unit)
  keys = ("tokens", "unit_ids") if with_unit_ids else ("tokens",)
  keys += ("target_tokens",) if with_targets else ()
  keys += ("loss_marks",) if with_marks else ()
  packed = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct={k: seq_units * L for k in keys}, num_packing_bins=num_packing_bins, seed=seed,
      shuffle_bins=False)
  return packed.map(_Finalize(L))
