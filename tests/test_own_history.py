"""train.own_history: each step rolls the model out over its window (no gradient, KV cache, the engine's
sampling) and, in chosen rows, feeds it its own draws as out-slot inputs outside the recording's turns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import random_batch, tiny_config, train_losses
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, ConfigError, TextConfig
from wan_streamer_jax.model import flops
from wan_streamer_jax.model.transformer import create_model
from wan_streamer_jax.streaming.sampling import SamplingConfig
from wan_streamer_jax.train import own_history, own_samples

# a depth head and a window shorter than the rows, so the rollout's ring cache wraps
CFG = tiny_config(**{"model.attention_impl": "xla", "model.depth_layers": 1, "model.window_units": 4,
                     "model.sink_units": 1})
LAYOUT = schedule.unit_layout(CFG)
L = LAYOUT.tokens_per_unit
OWN = np.isin(LAYOUT.group, [GROUPS.index(g) for g in ("video_out", "audio_out", "text_out")])
GREEDY = SamplingConfig(temperature=0.0, top_k=0, text_temperature=0.0, text_top_k=0)


def test_the_rollout_feeds_back_what_the_model_would_draw_greedily():
  units = 10
  model = create_model(CFG, seed=3)
  batch = random_batch(CFG, 3, units, seed=4, packed=True)
  tokens, seg, uid = (np.array(batch[k]) for k in ("tokens", "segment_ids", "unit_ids"))
  use_own = np.ones((3, units), bool)
  use_own[2, 3:6] = False  # row 2: three units keep the recording's out slots
  keys = jax.random.key_data(jax.random.split(jax.random.key(0), 3))
  read = np.asarray(own_history.rollout(CFG, model, jnp.asarray(tokens), seg, uid, use_own, keys, GREEDY))
  a, r = tokens.reshape(3, units, L), read.reshape(3, units, L)
  np.testing.assert_array_equal(a[..., ~OWN], r[..., ~OWN])  # the user's streams never change
  first = np.zeros((3, units), bool)  # units nothing drew: a segment's first unit, padding
  s0, u0 = seg.reshape(3, units, L)[..., 0], uid.reshape(3, units, L)[..., 0]
  first[:, 0] = True
  first[:, 1:] = (s0[:, 1:] == 0) | (s0[:, 1:] != s0[:, :-1]) | (u0[:, 1:] != u0[:, :-1] + 1)
  np.testing.assert_array_equal(a[first], r[first])
  np.testing.assert_array_equal(a[2, 3:6], r[2, 3:6])
  # the teacher-forced model on what the rollout read predicts, greedily, exactly what it was fed
  logits = model(jnp.asarray(read), jnp.asarray(seg), jnp.asarray(uid), depth_tokens=jnp.asarray(read))
  pred = own_samples.predicted_out_slots(LAYOUT, logits)
  fed = (~first) & use_own
  assert fed.sum() >= 15
  for g, p in pred.items():
    sl = LAYOUT.group_slices[g]
    np.testing.assert_array_equal(r[:, :, sl][fed], np.asarray(p)[:, :-1][fed[:, 1:]], err_msg=g)
  assert (a != r).any(-1)[fed].mean() > 0.9  # the draws are the model's, not the recording's


def test_turn_units_are_the_recordings_replies_with_a_margin_not_its_backchannels():
  units = 30
  tokens = np.full((1, units, L), 5, np.int32)
  text = LAYOUT.group_slices["text_out"]
  tokens[:, :, text] = TextConfig.PAD
  tokens[0, 3, text] = [ord(c) for c in "mhm."]  # a backchannel: 4 bytes
  for t in range(15, 19):  # a reply: 16 bytes over units 15..18
    tokens[0, t, text] = [ord(c) for c in "abcd"]
  got = np.asarray(own_history.recorded_turn_units(LAYOUT, jnp.asarray(tokens.reshape(1, -1)), margin=2,
                                                   min_bytes=8))[0]
  want = np.zeros(units, bool)
  want[14:20] = True  # a window of +-2 units holding >= 8 bytes: 2 of the reply's units or more
  np.testing.assert_array_equal(got, want)


def test_an_own_history_step_learns_from_its_rollout_and_is_reproducible():
  cfg = CFG.replace(model={"num_layers": 1})
  quiet = _quiet_batch(cfg, cfg.train.batch_size, cfg.train.units_per_example)
  (clean,), _ = train_losses(cfg, quiet)
  (own, again), m = train_losses(cfg.replace(train={"own_history": 1.0}), quiet, runs=2)
  assert float(m["own_history/units"]) == 1.0 and float(m["own_history/changed"]) > 0.5
  assert np.isfinite(own).all() and own == again  # the rollout is keyed by the optimizer step
  assert own[0] != clean[0]  # the step learned from the rollout's inputs, not the recording's


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_a_bad_probability_is_refused_by_name(bad):
  with pytest.raises(ConfigError, match=r"train\.own_history.*\[0, 1\]"):
    tiny_config(train={"own_history": bad})


def test_own_history_and_one_step_sampling_are_not_combined():
  with pytest.raises(ConfigError, match=r"train\.own_history.*own_stream_sampling"):
    tiny_config(train={"own_history": 0.5, "own_stream_sampling": 0.5})


def test_the_rollout_costs_its_rows_share_of_a_forward():
  b = CFG.train.batch_size
  for p in (0.25, 0.5, 1.0):
    on = CFG.replace(train={"own_history": p})
    rows = -(-int(p * b * 4) // 4)  # ceil(p * b)
    assert own_history.rollout_rows(p, b) == rows
    want = flops.train_flops_per_token(CFG) + rows / b * flops.forward_flops_per_token(
        CFG, CFG.train.units_per_example, schedule.OUT_GROUPS)  # the rollout draws: out heads only
    assert flops.train_flops_per_token(on) == pytest.approx(want)
  assert [own_history.rollout_rows(0.25, 8, s) for s in (1, 2, 4, 8)] == [2, 1, 1, 1]
  assert own_history.rollout_rows(0.3, 4) == 2 and own_history.rollout_rows(0.0, 4) == 0


def _quiet_batch(cfg, rows, units, seed=2):
  batch = random_batch(cfg, rows, units, seed=seed)
  tokens = np.array(batch["tokens"]).reshape(rows, units, L)
  tokens[:, :, LAYOUT.group_slices["text_out"]] = TextConfig.PAD  # a recording that only listens
  return {**batch, "tokens": jnp.asarray(tokens.reshape(rows, -1))}


@pytest.mark.parametrize("p,shards", [(0.25, 1), (0.5, 2)])
def test_only_the_chosen_rows_are_rolled_out_one_per_shard_here(p, shards):
  cfg = CFG.replace(train={"own_history": p})
  rows, units = 4, 8
  batch = _quiet_batch(cfg, rows, units)
  model = create_model(cfg, seed=3)
  seen = set()
  for seed in range(6):
    mixed, m = own_history.with_own_history(cfg, model, batch, jax.random.key(seed), shards=shards)
    changed = np.any(np.asarray(mixed["tokens"]) != np.asarray(batch["tokens"]), axis=1)
    # p * rows / shards = 1: exactly one row per shard, and only its units are counted
    np.testing.assert_array_equal(changed.reshape(shards, -1).sum(1), np.ones(shards))
    assert float(m["own_history/units"]) == pytest.approx(shards / rows)
    np.testing.assert_array_equal(mixed["target_tokens"], batch["tokens"])
    seen.add(tuple(np.flatnonzero(changed)))
  assert len(seen) > 1  # the chosen rows vary with the key


def test_a_sharded_batch_mixes_as_an_unsharded_one():
  from wan_streamer_jax.config import MeshConfig
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train.step import batch_shardings, batch_shards
  cfg = CFG.replace(train={"own_history": 0.5})
  batch = _quiet_batch(cfg, 4, 8)
  model = create_model(cfg, seed=3)
  key = jax.random.key(7)
  one, two = (make_mesh(MeshConfig(data=n, fsdp=1, tensor=1), jax.devices()[:n]) for n in (1, 2))
  assert (batch_shards(one), batch_shards(two)) == (1, 2)

  def mix(mesh, batch):
    with jax.set_mesh(mesh):
      f = jax.jit(lambda bt, k: own_history.with_own_history(cfg, model, bt, k, shards=2)[0]["tokens"])
      return np.asarray(f(jax.device_put(batch, batch_shardings(mesh, tuple(batch))), key))
  want, got = mix(one, batch), mix(two, batch)
  np.testing.assert_array_equal(got, want)
  assert (want != np.asarray(batch["tokens"])).any()
