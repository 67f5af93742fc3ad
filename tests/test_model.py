"""Whole-model block causality, windows, shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import random_batch, tiny_config
from wan_streamer_jax import schedule
from wan_streamer_jax.model.transformer import create_model


def _logits_by_position(model, batch):
  """Model logits re-scattered to `[batch, seq]` max-logit summaries per slot (float64 numpy)."""
  out = model(batch["tokens"], batch["segment_ids"], batch["unit_ids"])
  lay = model.layout.tile(batch["tokens"].shape[1] // model.layout.tokens_per_unit)
  full = np.zeros(batch["tokens"].shape + (8,))
  for k, idx in lay.kind_indices.items():
    full[:, idx] = np.asarray(out[k][..., :8])
  return full


@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_block_causality_whole_model(impl):
  cfg = tiny_config(**{"model.attention_impl": impl})
  model = create_model(cfg)
  L = model.layout.tokens_per_unit
  batch = random_batch(cfg, 2, 6)
  base = _logits_by_position(model, batch)
  t = 2
  # change one token of unit t + 1: logits of units <= t unchanged, unit t + 1 changes.
  tok = np.asarray(batch["tokens"]).copy()
  tok[:, (t + 1) * L + 5] = (tok[:, (t + 1) * L + 5] + 1) % 7
  changed = _logits_by_position(model, {**batch, "tokens": jnp.asarray(tok)})
  np.testing.assert_array_equal(changed[:, :(t + 1) * L], base[:, :(t + 1) * L])
  assert np.abs(changed[:, (t + 1) * L:] - base[:, (t + 1) * L:]).max() > 1e-4
  # change a token of unit t: other slots of unit t change (bidirectional inside the unit).
  tok = np.asarray(batch["tokens"]).copy()
  tok[:, t * L + 3] = (tok[:, t * L + 3] + 1) % 7
  changed = _logits_by_position(model, {**batch, "tokens": jnp.asarray(tok)})
  np.testing.assert_array_equal(changed[:, :t * L], base[:, :t * L])
  other = [i for i in range(t * L, (t + 1) * L) if i != t * L + 3]
  assert (np.abs(changed[:, other] - base[:, other]).max(axis=-1) > 1e-5).all(axis=0).sum() >= L - 1


@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_window_and_sinks_hide_old_units(impl):
  W, S = 2, 1
  cfg = tiny_config(**{"model.attention_impl": impl, "model.window_units": W, "model.sink_units": S,
                       "model.num_layers": 1})
  model = create_model(cfg)
  L = model.layout.tokens_per_unit
  batch = random_batch(cfg, 1, 7, seed=3)
  base = _logits_by_position(model, batch)
  query_unit = 6
  tok = np.asarray(batch["tokens"]).copy()
  tok[:, 2 * L:4 * L] = (tok[:, 2 * L:4 * L] + 1) % 5  # units 2, 3: outside window of unit 6, not sinks
  changed = _logits_by_position(model, {**batch, "tokens": jnp.asarray(tok)})
  np.testing.assert_allclose(changed[:, query_unit * L:], base[:, query_unit * L:], rtol=0, atol=0)
  tok = np.asarray(batch["tokens"]).copy()
  tok[:, :L] = (tok[:, :L] + 1) % 5  # unit 0 is a sink: visible to everyone
  changed = _logits_by_position(model, {**batch, "tokens": jnp.asarray(tok)})
  assert np.abs(changed[:, query_unit * L:] - base[:, query_unit * L:]).max() > 1e-5


def test_packed_segments_are_independent():
  cfg = tiny_config(**{"model.attention_impl": "reference", "model.num_layers": 1})
  model = create_model(cfg)
  L = model.layout.tokens_per_unit
  batch = random_batch(cfg, 1, 6, seed=1)
  seg = np.ones((1, 6 * L), np.int32)
  seg[:, 3 * L:] = 2
  unit_ids = np.asarray(batch["unit_ids"]).copy()
  unit_ids[:, 3 * L:] -= 3
  packed = {**batch, "segment_ids": jnp.asarray(seg), "unit_ids": jnp.asarray(unit_ids)}
  full = _logits_by_position(model, packed)
  # the second segment alone (its own unit ids from 0) gives the same logits.
  alone = _logits_by_position(model, {"tokens": batch["tokens"][:, 3 * L:],
                                      "segment_ids": jnp.ones((1, 3 * L), jnp.int32),
                                      "unit_ids": jnp.asarray(unit_ids[:, 3 * L:])})
  np.testing.assert_allclose(full[:, 3 * L:], alone, atol=2e-5)


@pytest.mark.parametrize("overrides", [
    {"model.compute_dtype": "bfloat16", "model.remat_policy": "dots"},
    {"model.remat_policy": "full", "model.param_dtype": "bfloat16", "model.compute_dtype": "bfloat16"},
    {"model.remat_policy": "dots_no_batch"},
])
def test_dtypes_and_remat_policies_train(overrides):
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train.state import create_train_state
  from wan_streamer_jax.train.step import make_train_step
  cfg = tiny_config(**overrides, **{"model.num_layers": 1})
  mesh = make_mesh(cfg.mesh, jax.devices()[:1])
  ts = create_train_state(cfg, mesh)
  step = make_train_step(cfg, ts, mesh)
  batch = random_batch(cfg, 4, 4, seed=2)
  state, m0 = step(ts.state, batch)
  state, m1 = step(state, batch)
  assert np.isfinite(float(m0["loss"])) and float(m1["loss"]) < float(m0["loss"])


def test_rope_sections_are_relative_per_axis():
  from wan_streamer_jax.model.rope import apply_rope, rope_angles, rope_tables
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)

  def score(pq, pk):
    rq = apply_rope(q, rope_tables(rope_angles(jnp.asarray([[pq]], jnp.int32), (8, 4, 4), 10000.0)))
    rk = apply_rope(k, rope_tables(rope_angles(jnp.asarray([[pk]], jnp.int32), (8, 4, 4), 10000.0)))
    return float(jnp.sum(rq * rk))

  base = score((5, 2, 1), (3, 1, 0))
  np.testing.assert_allclose(score((9, 2, 1), (7, 1, 0)), base, rtol=1e-5)   # shift t
  np.testing.assert_allclose(score((5, 6, 4), (3, 5, 3)), base, rtol=1e-5)   # shift h and w
  assert abs(score((5, 3, 1), (3, 1, 0)) - base) > 1e-4                      # h difference matters
