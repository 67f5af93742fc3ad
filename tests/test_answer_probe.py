"""The answer probe: greedy text_out predictions on the reply's answer words, teacher-forced, per task."""

import numpy as np
import pytest

from data_pipelines import text_slots
from data_pipelines.packing import window_tokens
from data_pipelines.text_slots import answer_runs
from data_pipelines.token_data import random_token_example
from tests.helpers import tiny_config
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, TextConfig
from wan_streamer_jax.evaluation.answer_probe import answer_knowledge, answer_task

CFG = tiny_config()
LAYOUT = schedule.unit_layout(CFG)
UNITS = 16


def _reply(words):
  """A model text stream `[UNITS, slots]` saying `words` = [(word, first_unit, last_unit)]."""
  turns = [{"speaker": "user", "kind": "reply", "end_unit": words[-1][2], "words": [list(w) for w in words]}]
  return text_slots.layout_text(text_slots.heard_events(turns), UNITS, CFG.text.text_slots)[0]


def _example(task, answer, words, answer_unit, seed=0):
  ex = random_token_example(CFG, UNITS, np.random.default_rng(seed))
  ex["text_out"] = _reply(words)
  ex.update(task=task, expected_answer=answer, answer_unit=np.int32(answer_unit))
  return ex


COLOUR = _example("greeting+colour", "purple", [("I", 2, 2), ("see", 3, 3), ("a", 4, 4), ("purple", 5, 6),
                                                  ("circle.", 7, 8)], answer_unit=5)
REPEAT = _example("repeat+arithmetic", "tiny robot", [("you", 2, 2), ("said", 3, 3), ("tiny", 4, 5),
                                                      ("robot.", 6, 7)], answer_unit=4, seed=1)


def _fn_from(ex, edit=lambda text, t_out: text, lead=0):
  """logits_fn whose argmax is the example's own next-unit text tokens, passed through `edit`."""
  L = LAYOUT.tokens_per_unit
  tokens = window_tokens(LAYOUT, ex, 0, UNITS, lead)[None]
  uid = np.repeat(np.arange(UNITS), L)[None]
  nxt, _ = schedule.next_unit_targets(tokens, np.ones_like(tokens), L, uid)
  text = np.asarray(LAYOUT.take_kind(np.asarray(nxt), "text"))
  t_out = np.asarray(LAYOUT.take_kind(LAYOUT.group[None], "text"))[0] == GROUPS.index("text_out")
  text = edit(text.copy(), np.tile(t_out, UNITS))

  def logits_fn(tokens, seg, unit_ids):
    return {"text": np.eye(TextConfig.VOCAB_SIZE, dtype=np.float32)[text]}
  return logits_fn


def test_answer_task_is_the_first_task_with_an_answer():
  assert answer_task("greeting+colour+arithmetic") == "colour"
  assert answer_task("repeat") == "repeat"
  assert answer_task("greeting+silence") is None


def test_an_oracle_knows_every_answer_and_a_silent_model_none():
  for ex, task, n_bytes in ((COLOUR, "colour", len("purple")), (REPEAT, "repeat", len("tinyrobot."))):
    perfect = answer_knowledge(_fn_from(ex), CFG, [ex])
    assert perfect[task] == {"answers": 1, "bytes": n_bytes, "first_byte_accuracy": 1.0, "byte_accuracy": 1.0,
                             "answer_accuracy": 1.0}
    other = [t for t in ("colour", "arithmetic", "repeat") if t != task]
    assert all(perfect[t]["answers"] == 0 for t in other)
    assert perfect["examples"][0]["reply"] == perfect["examples"][0]["model"]

    def silence(text, t_out):
      text[0, t_out] = TextConfig.PAD
      return text
    silent = answer_knowledge(_fn_from(ex, silence), CFG, [ex])
    assert silent[task]["answers"] == 1 and silent[task]["byte_accuracy"] == 0.0
    assert silent[task]["first_byte_accuracy"] == 0.0 and silent[task]["answer_accuracy"] == 0.0


def test_a_wrong_first_byte_is_a_wrong_decision_with_the_rest_spelled_right():
  def wrong_first(text, t_out):  # "purple" -> "xurple" in the model's text_out argmax
    sel = np.flatnonzero(t_out)
    pos = sel[np.flatnonzero(text[0, sel] == ord("p"))[0]]
    text[0, pos] = ord("x")
    return text
  r = answer_knowledge(_fn_from(COLOUR, wrong_first), CFG, [COLOUR])["colour"]
  assert r["first_byte_accuracy"] == 0.0 and r["answer_accuracy"] == 0.0
  assert r["byte_accuracy"] == pytest.approx(5 / 6)


def test_the_scored_run_is_the_one_nearest_the_answer_unit():
  words = [("purple", 1, 1), ("is", 2, 2), ("nice.", 3, 3), ("I", 8, 8), ("see", 9, 9), ("purple.", 10, 11)]
  ex = _example("colour", "purple", words, answer_unit=10)
  runs = answer_runs(ex["text_out"], "purple")
  assert len(runs) == 2

  def break_early(text, t_out):  # the early "purple" (not the answer) wrong: the score must not move
    sel = np.flatnonzero(t_out)
    pos = sel[np.flatnonzero(text[0, sel] == ord("p"))[0]]
    text[0, pos] = ord("x")
    return text
  assert answer_knowledge(_fn_from(ex, break_early), CFG, [ex])["colour"]["answer_accuracy"] == 1.0


def test_conversations_without_an_answer_are_not_scored():
  ex = _example("greeting+silence", "", [("hello.", 2, 3)], answer_unit=-1)
  r = answer_knowledge(_fn_from(ex), CFG, [ex])
  assert r["conversations"] == 1 and all(r[t]["answers"] == 0 for t in ("colour", "arithmetic", "repeat"))


def test_with_a_text_lead_the_answer_is_scored_where_its_text_is_due():
  # `_reply` puts a word's text in the unit after its span: the answer's at unit 7 (led by 2: unit 5, where
  # it is due), another "purple"'s at 10 (led: 8); nearest to the due unit is the answer, nearest to the
  # spoken unit (7) the other
  ex = _example("colour", "purple", [("purple", 6, 6), ("purple.", 9, 9)], answer_unit=7)
  led = tiny_config(text={"out_lead_units": 2})

  def break_second(text, t_out):
    sel = np.flatnonzero(t_out)
    pos = sel[np.flatnonzero(text[0, sel] == ord("p"))[2]]  # "p" 0 and 1 are the first word's
    text[0, pos] = ord("x")
    return text
  r = answer_knowledge(_fn_from(ex, break_second, lead=2), led, [ex])["colour"]
  assert r["answers"] == 1 and r["answer_accuracy"] == 1.0 and r["bytes"] == len("purple")
