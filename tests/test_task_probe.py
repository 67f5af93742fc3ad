"""The task probe: decision events from corpus turns, the linear read-out, the trunk states it reads."""

import numpy as np
import pytest
from flax import nnx

from data_pipelines.packing import window_tokens
from data_pipelines.token_data import random_token_example
from tests.helpers import tiny_config
from wan_streamer_jax import schedule
from wan_streamer_jax.evaluation.task_probe import decision_events, decision_states, fit_readout, task_knowledge
from wan_streamer_jax.model.transformer import create_model

CFG = tiny_config()
SPU = 2560  # samples per unit (only the turns' order is read from them)


def _turn(speaker, task, start_unit, words=(), kind="speech"):
  return {"speaker": speaker, "task": task, "kind": kind, "start_sample": start_unit * SPU,
          "words": [list(w) for w in words]}


# a greeting answered, a story of three parts (a backchannel after the first, silence after the second),
# its reply, a typed question and a last user turn nothing follows
META = {"turns": [
    _turn("user", "greeting", 0, [("hello.", 0, 1)]),
    _turn("model", "greeting", 3, [("hi.", 3, 3)]),
    _turn("user", "backchannel", 5, [("I", 5, 5), ("went,", 6, 7)]),
    _turn("model", "backchannel", 8, [("mhm.", 8, 8)]),
    _turn("user", "backchannel", 10, [("and", 10, 10), ("came,", 11, 12)]),
    _turn("user", "backchannel", 15, [("then", 15, 15), ("home.", 16, 17)]),
    _turn("model", "backchannel", 19, [("lovely.", 19, 20)]),
    _turn("user", "arithmetic", 22, [("what", 22, 22)], kind="typed"),
    _turn("model", "arithmetic", 24, [("two.", 24, 25)]),
    _turn("user", "colour", 27, [("what", 27, 27), ("colour?", 28, 29)]),
]}


def test_decision_events_split_a_story_into_pauses_and_its_end():
  assert decision_events(META, 40) == [(2, "greeting"), (8, "story_pause"), (13, "story_pause"),
                                       (18, "story_end")]
  # an event at or past the conversation's end is dropped; JSON text is read as well
  import json
  assert decision_events(json.dumps(META), 18) == [(2, "greeting"), (8, "story_pause"), (13, "story_pause")]


def test_the_readout_finds_tasks_the_features_hold_and_not_ones_they_do_not():
  rng = np.random.default_rng(0)
  tasks = ["colour", "greeting", "story_pause"]
  means = rng.normal(size=(3, 16)) * 2

  def draw(n):
    y = rng.integers(0, 3, n)
    return means[y] + rng.normal(size=(n, 16)), [tasks[i] for i in y]
  x, y = draw(300)
  xv, yv = draw(120)
  assert np.mean(np.array(fit_readout(x, y)(xv)) == np.array(yv)) > 0.95
  shuffled = list(rng.permutation(y))
  assert np.mean(np.array(fit_readout(x, shuffled)(xv)) == np.array(yv)) < 0.6


@pytest.fixture(scope="module")
def trunk():
  model = create_model(CFG, seed=0)
  forward = nnx.jit(lambda m, t, s, u: m.trunk(t, s, u))
  return lambda t, s, u: forward(model, t, s, u)


def _example(units=24, seed=0, cid="c0"):
  ex = random_token_example(CFG, units, np.random.default_rng(seed))
  ex["conversation_id"] = cid
  return ex


def test_decision_states_read_the_trunk_at_text_out_and_own_streams_only_from_the_next_unit(trunk):
  ex = _example()
  units, layout = int(ex["num_units"]), schedule.unit_layout(CFG)
  L = layout.tokens_per_unit
  full = np.asarray(trunk(window_tokens(layout, ex, 0, units)[None], np.ones((1, units * L), np.int32),
                          np.repeat(np.arange(units, dtype=np.int32), L)[None]))[0]
  slot = int(np.flatnonzero(np.asarray(layout.group) == schedule.GROUPS.index("text_out"))[0])
  picked = decision_states(trunk, CFG, ex, [3, 10, 20])  # bucketed to 32 units with padding
  np.testing.assert_allclose(picked, full[[3 * L + slot, 10 * L + slot, 20 * L + slot]], atol=1e-5, rtol=1e-5)
  # the model's own text of unit 12 onwards differs from the recording: the states of units <= 12 stay,
  # those after change (its tokens of unit t are its out-slot inputs of unit t + 1)
  own = {g: np.asarray(ex[g]).reshape(units, -1).copy() for g in schedule.OUT_GROUPS}
  own["text_out"][12:] = (own["text_out"][12:] + 1) % 256
  before = decision_states(trunk, CFG, ex, list(range(units)))
  after = decision_states(trunk, CFG, ex, list(range(units)), own)
  np.testing.assert_allclose(after[:13], before[:13], atol=1e-5, rtol=1e-5)
  assert np.abs(after[13:] - before[13:]).max(axis=1).min() > 1e-4


def test_task_knowledge_scores_both_contexts_and_they_agree_on_the_recording(trunk):
  fit = [(_example(seed=i, cid=f"f{i}"), META) for i in range(6)]
  held = [(_example(seed=10 + i, cid=f"e{i}"), META) for i in range(2)]
  recorded = {ex["conversation_id"]: {g: np.asarray(ex[g]).reshape(int(ex["num_units"]), -1)
                                      for g in schedule.OUT_GROUPS} for ex, _ in held}
  out = task_knowledge(trunk, CFG, fit, held, recorded)
  assert out["fit_events"] == 6 * 4
  tf, fr = out["teacher_forced"], out["free_running"]
  assert tf["events"] == 8 and {k: v["n"] for k, v in tf["per_task"].items()} == {
      "greeting": 2, "story_end": 2, "story_pause": 4}
  assert 0 <= tf["accuracy"] <= 1
  assert fr == tf  # own streams equal to the recording: the same states, the same reading
  with pytest.raises(ValueError, match="at least two tasks"):
    task_knowledge(trunk, CFG, [(_example(), {"turns": META["turns"][:2]})], held)
