"""Which text_out targets weigh more in the loss (`loss.answer_weight`, `pause_weight`, `stop_weight`).

A training batch carries `loss_marks` int32 like `tokens`: a code per token, read one unit later as
the targets are (`model/losses.next_unit_loss`). Codes, on the model's text_out slots only:

  REPLY  (1)  the reply that carries a conversation's first answer: every text_out target (bytes,
              WORD_END, END_OF_TURN, PAD) from the unit the user stopped asking to the reply's
              END_OF_TURN — weighs `loss.answer_weight`;
  ANSWER (2)  the bytes of the answer inside that reply (`text_slots.answer_mask`) — the same weight;
              `loss/answer` is their mean CE;
  PAUSE  (3)  the user's mid-turn pauses: every text_out target from the unit the user stopped to the
              last unit of their resumed speech, when the model says at most `PAUSE_MAX_WORDS` words
              in between (a backchannel, or nothing) — weighs `loss.pause_weight`; `loss/pause`.
  STOP   (4)  every user stop, a pause or a turn's end alike: the text_out targets of the unit the user
              stopped and the `STOP_UNITS` units after it — weighs `loss.stop_weight`; `loss/stop`.
  A target in two windows takes the later code in this order: STOP, PAUSE, REPLY, ANSWER.

Why whole windows, not the answer's bytes alone: a weight that depends on the *target* moves the
loss' optimum (with weight w on class y the minimiser is q(y) ∝ w p(y)). Weighing only the answer's
bytes (run 6) weighed the first byte of "I do not see any shape." 10x and the first bytes of "I see
a red square." 1x — the model learned to say the former 7 times in 9. Inside a window every
alternative at a position weighs the same, so the weight only says *where* to learn, not *what*.
A window's extent is the corpus script's (the user's stop, the reply's end), so PAUSE also says how
much a takeover in a pause costs: where a pause and a turn's end look alike, it favours holding on
(run 7: takeovers in pauses 0.82 -> 0.36, turns taken 0.96 -> 0.82 — the story's last part was held
like its pauses). STOP windows have one extent after every stop, so where the two look alike both
outcomes weigh the same: the weight says where the hold-or-take decision is learnt, not which wins.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import text_slots
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, TextConfig
from wan_streamer_jax.run_config import MARK_ANSWER as ANSWER
from wan_streamer_jax.run_config import MARK_NONE as NONE
from wan_streamer_jax.run_config import MARK_PAUSE as PAUSE
from wan_streamer_jax.run_config import MARK_REPLY as REPLY
from wan_streamer_jax.run_config import MARK_STOP as STOP

PAUSE_MAX_WORDS = 2  # the corpus' backchannels have 1-2 words, its replies >= 4 (data_pipelines/dialogues.py)
REPLY_MAX_BACK = 4  # units a reply window reaches back when no user stop is found before it
# units after a user stop in its STOP window: the corpus' replies start 2 units after the user's last unit
# (452 of the demo's 472 train turn ends; 1-3 in all), the user resumes 4-10 units after a pause's (123 of 125)
STOP_UNITS = 4

PAD, WORD_END, END_OF_TURN = TextConfig.PAD, TextConfig.WORD_END, TextConfig.END_OF_TURN


def user_utterances(ex: dict) -> list[tuple[int, int]]:
  """The user's utterances as `(first_unit, last_unit)`, in order: spoken ones from `heard_text` (a word
  enters the queue one unit after its last sample, END_OF_TURN after the last word: the user's last unit
  is the unit before the last word's first byte — END_OF_TURN itself may wait in the queue behind long
  words), typed ones from `text_in` (END_OF_TURN in the unit the typing stops). `first_unit`: the unit
  the first word is heard / typed."""
  if "heard_text" not in ex:
    raise ValueError("loss marks: the token example has no 'heard_text' field (tokens written before it "
                     f"existed, or a corpus without metadata); fields: {sorted(ex)}")
  out = []
  for name, spoken in (("heard_text", True), ("text_in", False)):
    slots = np.shape(ex[name])[1]
    first, word_start, last_word = None, None, None
    for i, tok in enumerate(np.asarray(ex[name]).reshape(-1)):
      if tok < 256:
        first = i // slots if first is None else first
        word_start = i // slots if word_start is None else word_start
      elif tok == WORD_END:
        last_word, word_start = word_start, None
      elif tok == END_OF_TURN and first is not None:
        last = last_word - 1 if spoken and last_word is not None else i // slots - int(spoken)
        out.append((first, max(first - int(spoken), last)))
        first, word_start = None, None
  return sorted(out)


def _words_in(text_out: np.ndarray, lo: int, hi: int) -> int:
  return int((np.asarray(text_out)[max(lo, 0):max(hi, 0)] == WORD_END).sum())


def pause_windows(ex: dict, max_words: int = PAUSE_MAX_WORDS) -> list[tuple[int, int]]:
  """Units `[lo, hi]` (inclusive) of the user's mid-turn pauses: consecutive utterances with at most
  `max_words` model words between the first's last unit and the next's first heard unit; a window runs
  from the first's last unit to the next's last unit (Full-Duplex-Bench's pause window)."""
  return _pause_windows(ex["text_out"], user_utterances(ex), max_words)


def _pause_windows(text_out: np.ndarray, utts: list[tuple[int, int]], max_words: int) -> list[tuple[int, int]]:
  return [(a[1], b[1]) for a, b in zip(utts, utts[1:])
          if b[0] > a[1] and _words_in(text_out, a[1], b[0]) <= max_words]


def _reply_window(text_out: np.ndarray, answer_run: np.ndarray,
                  utts: list[tuple[int, int]]) -> tuple[int, int] | None:
  """Units `[lo, hi]` of the reply holding `answer_run` (bool like `text_out`): from the last user stop
  (`utts`: `user_utterances`) at or before the reply's first token (at most `REPLY_MAX_BACK` units back)
  to its END_OF_TURN."""
  flat = np.asarray(text_out).reshape(-1)
  hits = np.flatnonzero(np.asarray(answer_run).reshape(-1))
  if not hits.size:
    return None
  slots = np.shape(text_out)[1]
  ends_before = np.flatnonzero(flat[:hits[0]] == END_OF_TURN)
  start = int(ends_before[-1]) + 1 if ends_before.size else 0
  start += int(np.argmax(flat[start:] != PAD))  # the reply's first token
  ends_after = np.flatnonzero(flat[hits[-1]:] == END_OF_TURN)
  end = hits[-1] + int(ends_after[0]) if ends_after.size else flat.size - 1
  first_unit, last_unit = start // slots, end // slots
  stops = [last for _, last in utts if last <= first_unit]
  lo = max(stops[-1] if stops else 0, first_unit - REPLY_MAX_BACK)
  return lo, last_unit


def stop_windows(ex: dict, units: int = STOP_UNITS) -> list[tuple[int, int]]:
  """Units `[lo, hi]` (inclusive) after every user stop: from an utterance's last unit `units` on."""
  return _stop_windows(user_utterances(ex), units)


def _stop_windows(utts: list[tuple[int, int]], units: int) -> list[tuple[int, int]]:
  return [(last, last + units) for _, last in utts]


def unit_marks(ex: dict, answers: bool, pauses: bool, stops: bool = False) -> np.ndarray:
  """int32 codes like `ex["text_out"]` `[units, text_slots]` (the stream as the window reads it: led,
  if led; `answer_unit` already moved by the lead)."""
  marks = np.zeros(np.shape(ex["text_out"]), np.int32)
  utts = user_utterances(ex) if pauses or answers or stops else []
  if stops:
    for lo, hi in _stop_windows(utts, STOP_UNITS):
      marks[lo:hi + 1] = STOP
  if pauses:
    for lo, hi in _pause_windows(ex["text_out"], utts, PAUSE_MAX_WORDS):
      marks[lo:hi + 1] = PAUSE
  if answers:
    if "expected_answer" not in ex or "answer_unit" not in ex:
      raise ValueError("loss.answer_weight: the token example has no 'expected_answer' / 'answer_unit' "
                       f"metadata (tokens of a corpus without it); fields: {sorted(ex)}")
    run = text_slots.answer_mask(ex["text_out"], str(ex["expected_answer"]), int(ex["answer_unit"]))
    window = _reply_window(ex["text_out"], run, utts)
    if window is not None:
      marks[window[0]:window[1] + 1] = REPLY
      marks[run] = ANSWER
  return marks


def window_marks(layout: schedule.UnitLayout, marks: np.ndarray, start: int, n: int) -> np.ndarray:
  """int32 `[n * L]` like `packing.window_tokens(layout, ex, start, n)`: a conversation's `unit_marks`
  `marks` on the window's text_out slots (shifted and cut as its text_out: unit t holds unit t - 1),
  NONE elsewhere."""
  rows = schedule.shift_out_stream(marks, NONE)[start:start + n]
  marked = schedule.assemble_units(layout, {"text_out": rows})
  return np.where(np.tile(layout.group == GROUPS.index("text_out"), n), marked, NONE).astype(np.int32)
