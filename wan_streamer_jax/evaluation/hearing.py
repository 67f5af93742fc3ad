"""Does the trunk hear the user? Greedy text_in predictions against the words as heard, teacher-forced.

With `loss.text_in_target="heard"` the text_in slots of unit t predict the user's words that ended in
unit t (`text_slots.heard_events`). This probe runs the training forward over whole held-out
conversations and scores the argmax at those slots: over all heard bytes, and over the bytes of the
words that carry an answer (the phrase of a repeat request, the conversation's `expected_answer`),
which are rarer than the template words around them ("repeat after me:"). The model's bytes are drawn
in parallel per unit, so its transcript reads as letter salad even when most bytes are right; the
accuracies are the figure, the transcripts are for reading.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import text_slots
from data_pipelines.packing import heard_targets, window_tokens
from data_pipelines.text_slots import answer_runs
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, Config, ConfigError, TextConfig


def answer_byte_mask(heard: np.ndarray, answer: str) -> np.ndarray:
  """bool like `heard` `[units, slots]`: the bytes of every run of heard words that says `answer`."""
  mask = np.zeros(heard.shape, bool)
  for run in answer_runs(heard, answer):
    mask |= run
  return mask


def bucketed(tokens: np.ndarray, tokens_per_unit: int, bucket_units: int = 32):
  """One conversation's tokens int32 `[1, units * L]` padded to a multiple of `bucket_units` units with
  segment 0 -> (tokens, segment_ids, unit_ids), each int32 `[1, padded * L]`: the forward never lets a
  unit see later ones or another segment, so the real units' outputs are unchanged, and conversations
  of many lengths share a few compiled shapes."""
  L = tokens_per_unit
  units = tokens.shape[1] // L
  padded = -(-units // bucket_units) * bucket_units
  t = np.zeros((1, padded * L), np.int32)
  t[0, :units * L] = tokens[0]
  seg = np.zeros_like(t)
  seg[0, :units * L] = 1
  return t, seg, np.repeat(np.arange(padded, dtype=np.int32), L)[None]


def text_argmax(logits_fn, tokens: np.ndarray, layout, bucket_units: int = 32) -> np.ndarray:
  """int32 `[units * text slots per unit]`: the greedy text tokens of one whole conversation.

  `tokens` int32 `[1, units * L]` is padded to a multiple of `bucket_units` units with segment 0 (the
  forward never lets a unit see later ones or another segment, so the real units' logits are
  unchanged), so conversations of many lengths share a few compiled shapes.
  """
  units = tokens.shape[1] // layout.tokens_per_unit
  t, seg, uid = bucketed(tokens, layout.tokens_per_unit, bucket_units)
  per_unit = int(np.asarray(layout.take_kind(layout.group[None], "text")).shape[1])
  return np.asarray(logits_fn(t, seg, uid)["text"]).argmax(-1)[0][:units * per_unit]


def teacher_forced_text(logits_fn, cfg: Config, ex: dict, group: str, target_ex: dict | None = None):
  """One whole conversation through the training forward, every stream teacher-forced.

  Returns int32 `[units, text_slots]` arrays (pred, target) and bool valid, for `group` ("text_in" or
  "text_out"): row u holds the greedy prediction and the target of that group's slots one unit later
  (an in stream: unit u + 1's tokens; an out stream, shifted by one unit, the model's tokens *of* unit u),
  the targets read from `target_ex` (default `ex`, e.g. `packing.heard_targets(ex)`). The model's text
  leads its speech by `text.out_lead_units` as in training.
  """
  layout = schedule.unit_layout(cfg)
  L, S, lead = layout.tokens_per_unit, cfg.text.text_slots, cfg.text.out_lead_units
  units = int(ex["num_units"])
  tokens = window_tokens(layout, ex, 0, units, lead)[None]
  target = tokens if target_ex is None else window_tokens(layout, target_ex, 0, units, lead)[None]
  uid = np.repeat(np.arange(units, dtype=np.int32), L)[None]
  sel = np.tile(np.asarray(layout.take_kind(layout.group[None], "text"))[0] == GROUPS.index(group), units)
  tgt, valid = (np.asarray(x) for x in schedule.next_unit_targets(target, np.ones_like(tokens), L, uid))
  rows = lambda x: np.asarray(layout.take_kind(x, "text"))[0][sel].reshape(units, S)  # noqa: E731
  pred = text_argmax(logits_fn, tokens, layout)[sel].reshape(units, S)
  return pred, rows(tgt), rows(valid)


def heard_word_accuracy(logits_fn, cfg: Config, source, *, max_conversations: int | None = None,
                        examples: int = 6) -> dict:
  """Teacher-forced greedy accuracy of the text_in slots on heard words, whole conversations.

  Args:
    logits_fn: `(tokens, segment_ids, unit_ids)` int32 `[1, n * L]` -> `{kind: [1, n_kind, V]}` (n: the
      conversation's units padded with segment 0, `text_argmax`).
    cfg: the model's config (`loss.text_in_target` must be "heard").
    source: token examples with `heard_text` (`token_data.TokenDataSource`).
    max_conversations: score at most this many of `source`.
    examples: transcripts `{"heard", "model"}` of repeat requests returned for reading.
  Returns:
    {"byte_accuracy", "bytes", "pad_accuracy", "answer_byte_accuracy", "answer_bytes",
     "conversations", "examples"}.
  """
  if cfg.loss.text_in_target != "heard":
    raise ConfigError(f"heard_word_accuracy: needs loss.text_in_target='heard', got {cfg.loss.text_in_target!r}")
  S = cfg.text.text_slots
  counts = dict(hits=0, n=0, pad_hits=0, pad_n=0, ans_hits=0, ans_n=0)
  shown = []
  total = len(source) if max_conversations is None else min(len(source), int(max_conversations))
  for i in range(total):
    ex = source[i]
    units = int(ex["num_units"])
    pred, t, v = (x.reshape(-1) for x in teacher_forced_text(logits_fn, cfg, ex, "text_in", heard_targets(ex)))
    word, pad = (t < 256) & v, (t == TextConfig.PAD) & v
    ok = pred == t
    counts["hits"] += int(ok[word].sum())
    counts["n"] += int(word.sum())
    counts["pad_hits"] += int(ok[pad].sum())
    counts["pad_n"] += int(pad.sum())
    answer = str(ex.get("expected_answer", ""))
    if "repeat" in str(ex.get("task", "")) and answer:
      # target unit u + 1 sits at row u: the mask of the heard stream, shifted the same way
      ans = answer_byte_mask(t.reshape(units, S), answer).reshape(-1) & v
      counts["ans_hits"] += int(ok[ans].sum())
      counts["ans_n"] += int(ans.sum())
      if len(shown) < examples and ans.any():
        rows = np.flatnonzero(ans.reshape(units, S).any(-1))
        lo, hi = max(int(rows[0]) - 6, 0), int(rows[-1]) + 2
        shown.append({"answer": answer,
                      "heard": text_slots.decode_slots(t.reshape(units, S)[lo:hi]),
                      "model": text_slots.decode_slots(pred.reshape(units, S)[lo:hi])})
  c = counts
  return {"byte_accuracy": c["hits"] / max(c["n"], 1), "bytes": c["n"],
          "pad_accuracy": c["pad_hits"] / max(c["pad_n"], 1),
          "answer_byte_accuracy": c["ans_hits"] / max(c["ans_n"], 1), "answer_bytes": c["ans_n"],
          "conversations": total, "examples": shown}
