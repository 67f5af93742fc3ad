"""train.own_stream_sampling: a random share of the units read the model's own prediction of their out
slots (made one unit before, no gradient) as inputs; the targets and the depth head stay clean."""

import jax
import numpy as np
import pytest

from tests.helpers import random_batch, tiny_config, train_losses
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, KINDS, ConfigError
from wan_streamer_jax.model import flops
from wan_streamer_jax.train import own_samples

CFG = tiny_config(**{"model.attention_impl": "xla"})
LAYOUT = schedule.unit_layout(CFG)
L = LAYOUT.tokens_per_unit
OWN = np.isin(LAYOUT.group, [GROUPS.index(g) for g in ("video_out", "audio_out", "text_out")])


def _numpy_mix(tokens, logits, seg, uid, chosen):
  """Independent oracle: argmax at every sequence position (`kind_indices`), moved one unit later."""
  b, s = tokens.shape
  u = s // L
  pred = np.zeros_like(tokens)
  for k in KINDS:
    pred[:, LAYOUT.tile(u).kind_indices[k]] = np.argmax(logits[k], axis=-1)
  out = tokens.copy().reshape(b, u, L)
  pred, seg, uid = pred.reshape(b, u, L), seg.reshape(b, u, L)[..., 0], uid.reshape(b, u, L)[..., 0]
  for r in range(b):
    for t in range(1, u):
      if chosen[r, t] and seg[r, t] != 0 and seg[r, t] == seg[r, t - 1] and uid[r, t] == uid[r, t - 1] + 1:
        out[r, t, OWN] = pred[r, t - 1, OWN]
  return out.reshape(b, s)


def test_the_mix_puts_each_units_prediction_into_the_next_units_own_slots_only():
  units, rng = 8, np.random.default_rng(0)
  batch = {k: np.array(v) for k, v in random_batch(CFG, 3, units, seed=1, packed=True).items()}
  tokens, seg, uid = batch["tokens"], batch["segment_ids"], batch["unit_ids"]
  uid[0, 5 * L:] += 7  # row 0: a jump after unit 4 (sinks then a later window): unit 5 keeps its slots
  lay = LAYOUT.tile(units)
  logits = {k: rng.normal(size=(3, len(lay.kind_indices[k]), 640)).astype(np.float32) for k in KINDS}
  chosen = rng.random((3, units)) < 0.7
  got = np.asarray(own_samples.mix_own_predictions(
      LAYOUT, tokens, own_samples.predicted_out_slots(LAYOUT, logits), seg, uid, chosen))
  np.testing.assert_array_equal(got, _numpy_mix(tokens, logits, seg, uid, chosen))
  a, b = tokens.reshape(3, units, L), got.reshape(3, units, L)
  np.testing.assert_array_equal(a[..., ~OWN], b[..., ~OWN])  # the user's streams never change
  np.testing.assert_array_equal(a[:, 0], b[:, 0])  # unit 0 has no prediction
  np.testing.assert_array_equal(a[0, 5], b[0, 5])  # nor the unit after a jump of unit ids
  changed = (a != b).any(-1)
  assert changed.sum() >= 6 and not (changed & ~chosen).any()
  none = own_samples.mix_own_predictions(LAYOUT, tokens, own_samples.predicted_out_slots(LAYOUT, logits),
                                         seg, uid, np.zeros_like(chosen))
  np.testing.assert_array_equal(np.asarray(none), tokens)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_a_bad_probability_is_refused_by_name(bad):
  with pytest.raises(ConfigError, match=r"train\.own_stream_sampling.*\[0, 1\]"):
    tiny_config(train={"own_stream_sampling": bad})


def test_sampling_costs_one_more_forward():
  """One more forward with every head (the train step's three compute only the weighted groups' heads)."""
  on = CFG.replace(train={"own_stream_sampling": 0.3})
  units = CFG.train.units_per_example
  full = flops.forward_flops_per_token(CFG, units)
  assert full > flops.train_flops_per_token(CFG) / 3  # tiny's video_in weighs 0: its head is not trained
  assert flops.train_flops_per_token(on) == pytest.approx(flops.train_flops_per_token(CFG) + full)


def test_a_sampling_step_learns_from_mixed_inputs_and_is_reproducible():
  cfg = CFG.replace(model={"num_layers": 1})
  batch = random_batch(cfg, cfg.train.batch_size, cfg.train.units_per_example, seed=2)
  (base,), _ = train_losses(cfg, batch)
  (first, again), _ = train_losses(cfg.replace(train={"own_stream_sampling": 1.0}), batch, runs=2)
  assert np.isfinite(first).all() and first == again  # the draws are keyed by the optimizer step
  assert first[0] != base[0]  # every unit after the first reads the model's prediction, not the corpus'
  (none,), _ = train_losses(cfg.replace(train={"own_stream_sampling": 1e-9}), batch)  # draws no unit: the clean step
  np.testing.assert_allclose(none, base, rtol=1e-6)


def test_each_step_draws_its_own_units():
  keys = [own_samples.step_key(CFG, s) for s in (0, 1)]
  draws = [np.asarray(jax.random.bernoulli(k, 0.5, (4, 16))) for k in keys]
  assert not np.array_equal(*draws)
  again = jax.random.bernoulli(own_samples.step_key(CFG, 0), 0.5, (4, 16))
  np.testing.assert_array_equal(draws[0], np.asarray(again))  # a resumed run draws the same units
