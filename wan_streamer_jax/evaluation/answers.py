"""Answer accuracy per task (arithmetic, colour, repeat) and each task's chance rate.

An answer counts when the expected words ("seven", "red", "purple monkey")
appear, in order and adjacent, among the model's words in the answer window
(from the end of the question to the user's next turn). The words come from
the model's text stream or, for its speech, from the recogniser.

Chance rates are exact, from the corpus' own answer distributions
(`data_pipelines.dialogues`): `guess` = a model that answers with a draw from
the task's answer prior (sum of p^2), `majority` = a model that always gives
the most frequent answer (max p).
"""

from __future__ import annotations

import collections
import itertools

import numpy as np

from data_pipelines.text_slots import normalise_word

ANSWER_TASKS = ("arithmetic", "colour", "repeat")


def contains_answer(words, answer: str) -> bool:
  """Whether the words of `answer` occur adjacent and in order in `words` (strings, compared normalised)."""
  hay = [normalise_word(w) for w in words]
  hay = [w for w in hay if w]
  target = [normalise_word(w) for w in answer.split()]
  return any(hay[i:i + len(target)] == target for i in range(len(hay) - len(target) + 1))


def answer_distribution(task: str, camera_off_prob: float | None = None) -> dict[str, float]:
  """The corpus' prior over the expected answers of `task` (answer -> probability)."""
  from data_pipelines import dialogues, scenes
  from data_pipelines.corpus import CorpusSpec
  if task == "arithmetic":
    counts = collections.Counter()
    for a, op, b in itertools.product(dialogues.ARITHMETIC_OPERANDS, dialogues.ARITHMETIC_OPS,
                                      dialogues.ARITHMETIC_OPERANDS):
      counts[dialogues.number_words(dialogues.arithmetic_result(a, op, b)[2])] += 1
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}
  if task == "colour":
    off = CorpusSpec.camera_off_prob if camera_off_prob is None else camera_off_prob
    on, colours = 1.0 - off, list(scenes.SHAPE_COLOURS)
    dist = {c: on * (1 - dialogues.NO_SHAPE_PROB) / len(colours) for c in colours}
    dist[dialogues.NO_SHAPE_ANSWER] = on * dialogues.NO_SHAPE_PROB
    dist[dialogues.CAMERA_OFF_ANSWER] = off
    return dist
  if task == "repeat":
    return {p: 1.0 / len(dialogues.REPEAT_PHRASES) for p in dialogues.REPEAT_PHRASES}
  raise ValueError(f"answer_distribution: task must be one of {ANSWER_TASKS}, got {task!r}")


def chance_rates(task: str) -> dict:
  """{"guess": sum p^2, "majority": max p} of the task's answer prior."""
  p = np.asarray(list(answer_distribution(task).values()))
  return {"guess": float(np.sum(p ** 2)), "majority": float(p.max())}


def summarise(records: list[dict]) -> dict:
  """Per task: n, accuracy in the text stream, in the speech (recogniser), and the chance rates.

  `records`: one per answer event, {"task", "text_correct": bool, "speech_correct": bool | None}.
  """
  out = {}
  for task in ANSWER_TASKS:
    rs = [r for r in records if r["task"] == task]
    speech = [r["speech_correct"] for r in rs if r.get("speech_correct") is not None]
    out[task] = {"n": len(rs),
                 "text_accuracy": float(np.mean([r["text_correct"] for r in rs])) if rs else None,
                 "speech_accuracy": float(np.mean(speech)) if speech else None,
                 "chance": chance_rates(task)}
  return out
