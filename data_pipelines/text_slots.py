"""Text aligned to units: UTF-8 bytes in `text_slots` per unit (DESIGN §1).

Each word enters a queue at the unit where it starts (its first speech sample,
or the unit it is typed in) as its UTF-8 bytes followed by WORD_END; a turn's
end enters END_OF_TURN at the unit where the turn stops. Every unit emits up
to `text_slots` tokens from the queue, PAD in the rest, so text is never ahead
of speech and lags only when a unit's words do not fit. `lead_text` moves a
laid-out stream k units earlier (the model's text with `text.out_lead_units`).
`answer_runs` / `answer_mask` find where a stream spells a conversation's answer
(`loss_marks`, the answer probe).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wan_streamer_jax.config import TextConfig

PAD, WORD_END, END_OF_TURN, MISSING = (TextConfig.PAD, TextConfig.WORD_END, TextConfig.END_OF_TURN,
                                       TextConfig.MISSING)


@dataclasses.dataclass(frozen=True)
class TextEvent:
  """Tokens entering the queue at `unit`; `label` names it in the placement report."""

  unit: int
  tokens: tuple[int, ...]
  label: str = ""


def word_event(unit: int, word: str) -> TextEvent:
  return TextEvent(unit, tuple(word.encode("utf-8")) + (WORD_END,), word)


def end_of_turn_event(unit: int) -> TextEvent:
  return TextEvent(unit, (END_OF_TURN,), "<eot>")


def layout_text(events, num_units: int, text_slots: int):
  """Packs events into slots.

  Args:
    events: iterable of TextEvent (any order; stable by unit).
    num_units: units of the conversation.
    text_slots: tokens per unit.
  Returns:
    slots int32 `[num_units, text_slots]` (bytes 0..255, WORD_END, END_OF_TURN, PAD) and a list of
    `(label, wanted_unit, first_unit, last_unit)` placements (-1 when dropped at the end).
  """
  slots = np.full((num_units, text_slots), PAD, np.int32)
  events = sorted(events, key=lambda e: e.unit)
  queue: list[tuple[int, int]] = []  # (token, event index)
  placed = [[e.label, e.unit, -1, -1] for e in events]
  ei = 0
  for u in range(num_units):
    while ei < len(events) and events[ei].unit <= u:
      queue.extend((tok, ei) for tok in events[ei].tokens)
      ei += 1
    take, queue = queue[:text_slots], queue[text_slots:]
    for s, (tok, idx) in enumerate(take):
      slots[u, s] = tok
      if placed[idx][2] < 0:
        placed[idx][2] = u
      placed[idx][3] = u
  return slots, [tuple(p) for p in placed]


def heard_events(turns) -> list[TextEvent]:
  """The user's spoken words as heard: each word in the unit after its last sample, then END_OF_TURN.

  `turns`: the corpus metadata's turns (`speaker`, `kind`, `words` = `[word, first_unit, last_unit]`,
  `end_unit`). Typed turns are left out (they are in the text stream itself). A word enters one unit
  after it ends so that predicting unit t + 1 from unit t asks for the words heard up to unit t.
  END_OF_TURN closes each user utterance (a corpus turn: the parts of a story told with pauses between
  them are turns of their own), so it marks where the user stopped, not who has the floor.
  """
  events = []
  for t in turns:
    if t["speaker"] != "user" or t["kind"] == "typed" or not t["words"]:
      continue
    events += [word_event(last + 1, w) for w, _, last in t["words"]]
    events.append(end_of_turn_event(int(t["words"][-1][2]) + 1))
  return events


def missing_text(num_units: int, text_slots: int) -> np.ndarray:
  """int32 `[num_units, text_slots]` of MISSING (no text stream at all)."""
  return np.full((num_units, text_slots), MISSING, np.int32)


def decode_slots(slots: np.ndarray) -> str:
  """Human-readable text of `[units, text_slots]` tokens: words spaced, `|` for END_OF_TURN."""
  out = bytearray()
  for tok in np.asarray(slots).reshape(-1):
    tok = int(tok)
    if tok < 256:
      out.append(tok)
    elif tok == WORD_END:
      out += b" "
    elif tok == END_OF_TURN:
      out += b"| "
  return out.decode("utf-8", errors="replace").strip()


def unit_strings(slots: np.ndarray) -> list[str]:
  """Per-unit display strings (`_` word end, `|` end of turn, `.` pad, `?` missing)."""
  rows = []
  for row in np.asarray(slots):
    s = []
    for tok in row:
      tok = int(tok)
      s.append(chr(tok) if 32 <= tok < 127 else {WORD_END: "_", END_OF_TURN: "|", PAD: ".",
                                                  MISSING: "?"}.get(tok, "#"))
    rows.append("".join(s))
  return rows


def lead_text(slots: np.ndarray, units: int) -> np.ndarray:
  """A laid-out stream int32 `[num_units, text_slots]` moved `units` earlier: each unit's tokens re-enter
  the queue at unit `max(u - units, 0)` (`layout_text`), so nothing is dropped (tokens of the first
  units queue up at unit 0) and a word's bytes come `units` units before its speech."""
  slots = np.asarray(slots)
  if units == 0:
    return slots
  events = [TextEvent(max(u - units, 0), tuple(int(t) for t in row if t != PAD))
            for u, row in enumerate(slots) if (row != PAD).any()]
  return layout_text(events, slots.shape[0], slots.shape[1])[0].astype(slots.dtype)


def normalise_word(text: str) -> str:
  """Lower case, surrounding punctuation stripped: the form words are compared in."""
  return text.strip(".,!?:;\"'").lower()


def answer_runs(stream: np.ndarray, answer: str) -> list[np.ndarray]:
  """Every run of words in `stream` `[units, slots]` that says `answer`: each a bool mask like `stream`
  over the run's byte tokens (WORD_END and PAD excluded), in stream order."""
  flat = np.asarray(stream).reshape(-1)
  words, start = [], 0  # (normalised word, first position, end position)
  for i, tok in enumerate(flat):
    if tok == WORD_END:
      text = bytes(int(t) for t in flat[start:i] if t < 256).decode("utf-8", "replace")
      words.append((normalise_word(text), start, i))
      start = i + 1
    elif tok >= 256:
      start = i + 1
  target = [normalise_word(w) for w in answer.split()]
  runs = []
  for j in range(len(words) - len(target) + 1):
    if target and [w for w, _, _ in words[j:j + len(target)]] == target:
      mask = np.zeros(flat.shape, bool)
      for _, a, b in words[j:j + len(target)]:
        mask[a:b] = flat[a:b] < 256
      runs.append(mask.reshape(np.shape(stream)))
  return runs


def answer_mask(stream: np.ndarray, answer: str, due_unit: int, valid: np.ndarray | None = None) -> np.ndarray:
  """bool like `stream` `[units, slots]`: the bytes of the run of words saying `answer` whose first byte is
  nearest unit `due_unit` (a conversation's first answer: `expected_answer` at `answer_unit`, minus
  `text.out_lead_units`); all False without an answer (`answer` empty, `due_unit` < 0) or such a run.
  `valid` (bool like `stream`): only these bytes count (a run with none of them is no run)."""
  runs = answer_runs(stream, answer) if answer and due_unit >= 0 else []
  if valid is not None:
    runs = [r & valid for r in runs if (r & valid).any()]
  if not runs:
    return np.zeros(np.shape(stream), bool)
  return min(runs, key=lambda r: abs(int(np.flatnonzero(r.any(-1))[0]) - due_unit))
