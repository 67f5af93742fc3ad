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


def test_the_probes_bucketed_forward_gives_the_unpadded_argmax():
  """`text_argmax` pads a conversation with segment 0 to share compiled shapes: the real units' argmax
  must be the unpadded forward's (a depth head included)."""
  from flax import nnx
  from wan_streamer_jax.evaluation.hearing import text_argmax
  from wan_streamer_jax.model.transformer import create_model
  cfg = tiny_config(**{"model.attention_impl": "xla", "model.depth_layers": 1})
  model, lay = create_model(cfg, seed=1), schedule.unit_layout(cfg)
  ex = random_token_example(cfg, 11, np.random.default_rng(2))
  tokens = window_tokens(lay, ex, 0, 11)[None]
  uid = np.repeat(np.arange(11, dtype=np.int32), lay.tokens_per_unit)[None]
  fn = nnx.jit(lambda m, t, s, u: m(t, s, u))
  want = np.asarray(fn(model, tokens, np.ones_like(tokens), uid)["text"]).argmax(-1)[0]
  got = text_argmax(lambda t, s, u: fn(model, t, s, u), tokens, lay, bucket_units=8)  # 11 -> 16 units
  np.testing.assert_array_equal(got, want)
