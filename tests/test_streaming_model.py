"""One forward for training and decode: the KV-cache path equals the training forward (train == stream)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import random_batch, tiny_config
from wan_streamer_jax.model import kv_cache
from wan_streamer_jax.model.transformer import create_model

W, S = 3, 1  # a ring of 4 units; 14 units wrap it three times


def _decode_fn(model):
  graphdef, params = nnx.split(model)

  @jax.jit
  def decode(params, tokens, segment, units, cache):
    return nnx.merge(graphdef, params)(tokens, segment, units, cache=cache)

  return params, decode


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_unit_by_unit_decode_equals_the_training_forward(impl):
  cfg = tiny_config(**{"model.attention_impl": impl, "model.window_units": W, "model.sink_units": S})
  model = create_model(cfg)
  L, units, batch = model.layout.tokens_per_unit, 14, 2
  data = random_batch(cfg, batch, units, seed=1)
  graphdef, params = nnx.split(model)
  full = jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))(params, data["tokens"])
  params, decode = _decode_fn(model)
  cache = model.init_cache(batch)
  assert cache.capacity_tokens == (W + S) * L
  # row 1 starts its conversation 2 units later (a pool's rows are at different units)
  lag = 2
  for t in range(units + lag):
    rows = [t if t < units else -1, t - lag]  # -1: nothing to feed (row 0 finished)
    tok = jnp.stack([data["tokens"][r, max(u, 0) * L:(max(u, 0) + 1) * L] for r, u in enumerate(rows)])
    seg = jnp.asarray([[int(u >= 0)] * L for u in rows], jnp.int32)  # segment 0: an inactive row
    uid = jnp.asarray([[max(u, 0)] * L for u in rows], jnp.int32)
    logits, cache = decode(params, tok, seg, uid, cache)
    for r, u in enumerate(rows):
      if u < 0:
        continue
      for kind, lg in logits.items():
        n = lg.shape[1]
        np.testing.assert_allclose(np.asarray(lg[r]), np.asarray(full[kind][r, u * n:(u + 1) * n]),
                                   atol=1e-4, rtol=0, err_msg=f"{impl} row {r} unit {u} {kind}")
  # the padded vocabulary is masked next to the logits (what the loss and the sampler share)
  for kind, lg in logits.items():
    assert np.all(np.asarray(lg)[..., ~model.layout.vocab_mask(kind)] <= -1e8)


def test_inactive_rows_leave_the_cache_bit_identical():
  cfg = tiny_config(**{"model.attention_impl": "xla", "model.window_units": W, "model.sink_units": S})
  model = create_model(cfg)
  L = model.layout.tokens_per_unit
  params, decode = _decode_fn(model)
  cache = model.init_cache(2)
  data = random_batch(cfg, 2, 6, seed=2)
  for t in range(6):
    _, cache = decode(params, data["tokens"][:, t * L:(t + 1) * L], jnp.ones((2, L), jnp.int32),
                      jnp.full((2, L), t, jnp.int32), cache)
  before = jax.tree.map(np.asarray, cache)
  _, after = decode(params, data["tokens"][:, :L], jnp.asarray([[0] * L, [1] * L], jnp.int32),
                    jnp.full((2, L), 6, jnp.int32), cache)
  for name in ("k", "v"):  # [layers, batch, ...]
    np.testing.assert_array_equal(np.asarray(getattr(after, name))[:, 0], getattr(before, name)[:, 0])
  for name in ("unit_ids", "segment_ids"):  # [batch, ...]
    np.testing.assert_array_equal(np.asarray(getattr(after, name))[0], getattr(before, name)[0])
  assert not np.array_equal(np.asarray(after.unit_ids[1]), before.unit_ids[1])


def test_ring_keeps_sinks_and_the_window():
  off = lambda u: np.asarray(kv_cache.ring_offset(jnp.asarray(u, jnp.int32), sink_units=2, capacity_units=5,
                                                  tokens_per_unit=10))
  np.testing.assert_array_equal(off([0, 1, 2, 3, 4, 5, 6, 7]), [0, 10, 20, 30, 40, 20, 30, 40])
  off0 = np.asarray(kv_cache.ring_offset(jnp.arange(7, dtype=jnp.int32), sink_units=0, capacity_units=3,
                                         tokens_per_unit=4))
  np.testing.assert_array_equal(off0, [0, 4, 8, 0, 4, 8, 0])


def test_no_window_needs_an_explicit_capacity():
  model = create_model(tiny_config(**{"model.window_units": None}))
  with pytest.raises(ValueError, match="max_units.*window_units is None"):
    model.init_cache(1)
  assert model.init_cache(1, max_units=6).capacity_tokens == 6 * model.layout.tokens_per_unit
  windowed = create_model(tiny_config(**{"model.window_units": 4, "model.sink_units": 1}))
  with pytest.raises(ValueError, match="max_units.*sink_units \\+ window_units = 5"):
    windowed.init_cache(1, max_units=9)


def test_decode_rejects_bad_shapes():
  cfg = tiny_config(**{"model.window_units": W, "model.sink_units": S})
  model = create_model(cfg)
  L = model.layout.tokens_per_unit
  cache = model.init_cache(1)
  with pytest.raises(ValueError, match="one unit per stream"):
    model(jnp.zeros((1, 2 * L), jnp.int32), None, jnp.zeros((1, 2 * L), jnp.int32), cache=cache)
  with pytest.raises(ValueError, match="unit_ids: with a cache"):
    model(jnp.zeros((1, L), jnp.int32), cache=cache)
