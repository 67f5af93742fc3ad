"""The scored moments of a dialogue, read from the corpus' turn list (its `metadata` JSON).

Every metric is scored in a window after an event of the USER's script (the
user stream is teacher-forced, so these times hold whatever the model does):

- `Pause`: the user stops mid-turn and goes on (consecutive user turns of one
  task with only backchannels between). Window: from the pause to the end of the
  resumed speech — the model should not take the floor anywhere in it.
- `TurnEnd`: the user ends a turn and the script has the model reply. Window:
  to the user's next turn (or the dialogue's end).
- `Interruption`: the user starts talking while the model is speaking (the
  corpus' "interrupt" task). Stop latency is measured from its start, the
  takeover after it in the window from its end to the user's next turn.
- `AnswerEvent`: a question with an expected answer (arithmetic, colour,
  repeat). Window: from the end of the question to the user's next turn.
"""

from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class Pause:
  start: float  # the user stops (s)
  end: float  # the user resumes
  window_end: float  # the resumed speech ends
  task: str


@dataclasses.dataclass(frozen=True)
class TurnEnd:
  time: float  # the user's turn ends (s)
  window_end: float  # the user's next turn starts (or the dialogue ends)
  task: str
  typed: bool  # the turn was typed, not spoken
  reference_reply: tuple[float, float] | None  # the scripted model reply (start, end) in s


@dataclasses.dataclass(frozen=True)
class Interruption:
  start: float  # the user starts talking over the model (s)
  end: float  # the user's interrupting turn ends
  window_end: float
  reference_stop: float  # where the reference model stopped talking


@dataclasses.dataclass(frozen=True)
class AnswerEvent:
  task: str  # arithmetic | colour | repeat
  answer: str  # expected words, e.g. "seven", "red", "purple monkey"
  question_end: float  # s
  window_end: float
  reference_reply: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class DialogueEvents:
  duration: float  # s
  pauses: tuple[Pause, ...]
  turn_ends: tuple[TurnEnd, ...]
  interruptions: tuple[Interruption, ...]
  answers: tuple[AnswerEvent, ...]


def events_from_metadata(metadata: str | bytes | dict, duration: float) -> DialogueEvents:
  """Events of one corpus conversation; `metadata` is its JSON (`corpus.generate_conversation`)."""
  meta = json.loads(metadata) if isinstance(metadata, (str, bytes)) else metadata
  for key in ("turns", "answers", "sample_rate"):
    if key not in meta:
      raise ValueError(f"metadata: expected the corpus' key {key!r}, got keys {sorted(meta)}")
  sr = float(meta["sample_rate"])
  turns = sorted(meta["turns"], key=lambda t: t["start_sample"])
  sec = lambda t, k: t[k] / sr  # noqa: E731
  users = [t for t in turns if t["speaker"] == "user"]
  models = [t for t in turns if t["speaker"] == "model"]

  def next_user_start(after: float, exclude) -> float:
    later = [sec(u, "start_sample") for u in users if u is not exclude and sec(u, "start_sample") >= after]
    return min(later, default=duration)

  def next_user(u):
    later = [v for v in users if v["start_sample"] >= u["end_sample"]]
    return later[0] if later else None

  pauses, ends, interruptions = [], [], []
  for u in users:
    start, end = sec(u, "start_sample"), sec(u, "end_sample")
    over = [m for m in models if m["start_sample"] <= u["start_sample"] < m["end_sample"] and m["interrupted"]]
    if over:
      interruptions.append(Interruption(start, end, next_user_start(end, u), sec(over[0], "end_sample")))
      continue
    following = [t for t in turns if t is not u and t["start_sample"] >= u["end_sample"]]
    if not following:
      continue
    nxt = following[0]
    if nxt["speaker"] == "model" and nxt["kind"] == "speech":
      ends.append(TurnEnd(end, next_user_start(end, u), u["task"], u["kind"] == "typed",
                          (sec(nxt, "start_sample"), sec(nxt, "end_sample"))))
      continue
    resumed = next_user(u)
    between = [t for t in following if t["start_sample"] < (resumed or {}).get("start_sample", 0)]
    if resumed is not None and resumed["task"] == u["task"] and all(t["kind"] == "backchannel" for t in between):
      pauses.append(Pause(end, sec(resumed, "start_sample"), sec(resumed, "end_sample"), u["task"]))

  answers = []
  for a in meta["answers"]:
    reply = [m for m in models if m["start_unit"] == a["turn_start_unit"] and m["answer"] == a["answer"]]
    if not reply:
      raise ValueError(f"metadata: no model turn carries the answer {a['answer']!r} at unit {a['turn_start_unit']}")
    reply = reply[0]
    question = [u for u in users if u["end_sample"] <= reply["start_sample"] and u["task"] == a["task"]]
    if not question:
      raise ValueError(f"metadata: no user question before the {a['task']} answer {a['answer']!r}")
    q_end = sec(question[-1], "end_sample")
    answers.append(AnswerEvent(a["task"], a["answer"], q_end, next_user_start(q_end, question[-1]),
                               (sec(reply, "start_sample"), sec(reply, "end_sample"))))
  return DialogueEvents(duration, tuple(pauses), tuple(ends), tuple(interruptions), tuple(answers))
