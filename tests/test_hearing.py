"""The hearing probe: greedy text_in predictions vs the words as heard, overall and on answer words."""

import numpy as np

from data_pipelines import text_slots
from data_pipelines.packing import heard_targets, window_tokens
from data_pipelines.token_data import random_token_example
from tests.helpers import tiny_config
from wan_streamer_jax import schedule
from wan_streamer_jax.config import TextConfig
from wan_streamer_jax.evaluation.hearing import answer_byte_mask, heard_word_accuracy

CFG = tiny_config(loss={"text_in_target": "heard"})
LAYOUT = schedule.unit_layout(CFG)
TURNS = [{"speaker": "user", "kind": "repeat", "end_unit": 6,
          "words": [["repeat", 1, 2], ["after", 2, 3], ["me:", 3, 3], ["tiny", 4, 4], ["robot.", 5, 6]]}]


def _example(units=16):
  ex = random_token_example(CFG, units, np.random.default_rng(0))
  ex["text_in"][:] = TextConfig.MISSING
  ex["heard_text"] = text_slots.layout_text(text_slots.heard_events(TURNS), units, CFG.text.text_slots)[0]
  ex.update(task="repeat", expected_answer="tiny robot")
  return ex


def _fn_from(ex, pick):
  units, L = int(ex["num_units"]), LAYOUT.tokens_per_unit
  target = window_tokens(LAYOUT, heard_targets(ex), 0, units)[None]
  uid = np.repeat(np.arange(units), L)[None]
  nxt, _ = schedule.next_unit_targets(target, np.ones_like(target), L, uid)
  text = np.asarray(LAYOUT.take_kind(np.asarray(nxt), "text"))

  def logits_fn(tokens, seg, unit_ids):
    return {"text": np.eye(TextConfig.VOCAB_SIZE, dtype=np.float32)[pick(text)]}
  return logits_fn


def test_answer_bytes_are_the_heard_run_of_the_answer_words():
  heard = _example()["heard_text"]
  mask = answer_byte_mask(heard, "tiny robot")
  assert bytes(int(t) for t in heard.reshape(-1)[mask.reshape(-1)]).decode() == "tinyrobot."
  assert not answer_byte_mask(heard, "robot tiny").any()  # a run in order, not a bag of words


def test_an_oracle_hears_everything_and_a_silent_model_nothing():
  ex = _example()
  perfect = heard_word_accuracy(_fn_from(ex, lambda t: t), CFG, [ex])
  assert perfect["byte_accuracy"] == 1.0 and perfect["answer_byte_accuracy"] == 1.0 and perfect["pad_accuracy"] == 1.0
  assert perfect["bytes"] == len("repeatafterme:tinyrobot.") and perfect["answer_bytes"] == len("tinyrobot.")
  assert perfect["examples"][0]["heard"] == perfect["examples"][0]["model"]
  silent = heard_word_accuracy(_fn_from(ex, lambda t: np.full_like(t, TextConfig.PAD)), CFG, [ex])
  assert silent["byte_accuracy"] == 0.0 and silent["answer_byte_accuracy"] == 0.0 and silent["pad_accuracy"] == 1.0
