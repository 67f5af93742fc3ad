"""Does the model know the answer? Greedy text_out predictions on the answer words, teacher-forced.

The behaviour evaluation scores answers free-running (sampled, a handful per task on the test split).
This probe asks the narrower question on held-out token data: with every stream teacher-forced (the
user's question, the video, the model's own reply so far), does the argmax of the model's text_out
slots spell the answer word where the corpus' reply says it ("purple" in "I see a purple circle.",
"seven" in "three plus four is seven.", "tiny robot" in "you said tiny robot.")? Per answer task
(`answers.ANSWER_TASKS`):

- `first_byte_accuracy`: the answer's first byte — the decision; the rest of the word is spelling;
- `byte_accuracy`: all its bytes;
- `answer_accuracy`: answers with every byte right (what greedy decoding of that unit would write
  given the right reply so far).

A conversation's scored answer is its first (`expected_answer`, at `answer_unit`); a task's chance
is `answers.chance_rates`. The examples pair the reply's text around the answer with the argmax.

Read it with its blind spot in mind: teacher-forced, the model also reads its own recorded voice and
face up to the answer, free-running its own samples. The demo's run 4 leans on that recording:
replacing its own audio_out / video_out of the one unit before the answer with the unit before's
drops repeat from 13/13 answers to 0/13 and colour from 9/14 to 0/14 (validation; README "The
demo"), and free-running (greedy text) it answers 3/16 and 0/16. The same swap is the probe's
robustness check for a model that is meant to answer from the user.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import text_slots
from wan_streamer_jax.config import Config
from wan_streamer_jax.evaluation.answers import ANSWER_TASKS
from wan_streamer_jax.evaluation.hearing import teacher_forced_text


def answer_task(task: str) -> str | None:
  """The task of a conversation's first answer: its first task that has one (`"greeting+colour"` -> colour)."""
  return next((t for t in str(task).split("+") if t in ANSWER_TASKS), None)


def answer_knowledge(logits_fn, cfg: Config, source, *, max_conversations: int | None = None,
                     examples: int = 6) -> dict:
  """Teacher-forced greedy accuracy of the text_out slots on each conversation's first answer.

  Args:
    logits_fn: `(tokens, segment_ids, unit_ids)` int32 `[1, n * L]` -> `{"text": [1, n_text, V]}` (n: the
      conversation's units padded with segment 0, `hearing.text_argmax`)
      (the training forward: with a depth head, its teacher-forced logits are the text_out slots').
    cfg: the model's config.
    source: token examples with `task`, `expected_answer`, `answer_unit` (`token_data.TokenDataSource`).
    max_conversations: read at most this many of `source`.
    examples: `{"task", "answer", "reply", "model"}` transcripts returned for reading.
  Returns:
    {task: {"answers", "bytes", "first_byte_accuracy", "byte_accuracy", "answer_accuracy"}} for each
    answer task, plus "conversations" (read) and "examples".
  """
  counts = {t: dict(n=0, bytes=0, hits=0, first=0, whole=0) for t in ANSWER_TASKS}
  shown = []
  total = len(source) if max_conversations is None else min(len(source), int(max_conversations))
  for i in range(total):
    ex = source[i]
    task, answer = answer_task(ex.get("task", "")), str(ex.get("expected_answer", ""))
    if task is None or not answer or int(ex.get("answer_unit", -1)) < 0:
      continue
    pred, t, v = teacher_forced_text(logits_fn, cfg, ex, "text_out")
    # target row u holds the out slots of unit u + 1, i.e. the model's tokens *of* unit u (out streams are
    # shifted): the run nearest the unit where the answer's text is due (its speech's unit,
    # `text.out_lead_units` earlier)
    due = int(ex["answer_unit"]) - cfg.text.out_lead_units
    run = text_slots.answer_mask(t, answer, due, valid=v)
    if not run.any():  # the reply does not say its answer in the text stream (e.g. cut at the window's end)
      continue
    ok = (pred == t)[run]
    c = counts[task]
    c["n"] += 1
    c["bytes"] += int(ok.size)
    c["hits"] += int(ok.sum())
    c["first"] += int(ok[0])
    c["whole"] += int(ok.all())
    if len(shown) < examples and task not in {e["task"] for e in shown[-2:]}:
      rows = np.flatnonzero(run.any(-1))
      lo, hi = max(int(rows[0]) - 3, 0), int(rows[-1]) + 2
      shown.append({"task": task, "answer": answer, "reply": text_slots.decode_slots(t[lo:hi]),
                    "model": text_slots.decode_slots(pred[lo:hi])})
  out = {task: {"answers": c["n"], "bytes": c["bytes"],
                "first_byte_accuracy": c["first"] / max(c["n"], 1),
                "byte_accuracy": c["hits"] / max(c["bytes"], 1),
                "answer_accuracy": c["whole"] / max(c["n"], 1)} for task, c in counts.items()}
  return {**out, "conversations": total, "examples": shown}
