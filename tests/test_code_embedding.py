"""Per-digit embeddings of FSQ codes (`model.code_digit_embed`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import random_batch, tiny_config
from wan_streamer_jax.codecs.fsq import fsq_digits, fsq_quantize
from wan_streamer_jax.model.transformer import create_model

LEVELS = (8, 8, 5, 5, 5)


def test_digits_are_the_codec_code_ids_digits():
  z = jax.random.normal(jax.random.key(0), (512, len(LEVELS))) * 2
  values, codes = fsq_quantize(z, LEVELS)
  digits = np.asarray(fsq_digits(codes, LEVELS))
  basis = np.cumprod([1] + list(LEVELS[:-1]))
  np.testing.assert_array_equal((digits * basis).sum(-1), np.asarray(codes))
  assert (digits >= 0).all() and (digits < np.asarray(LEVELS)).all()
  # each digit is one quantised latent channel: its value orders like the channel's
  half = np.floor(np.asarray(LEVELS) / 2)
  np.testing.assert_allclose((digits - half) / half, np.asarray(values), atol=1e-6)


def test_codes_that_share_digits_share_rows_and_missing_gets_none():
  cfg = tiny_config(**{"model.code_digit_embed": True})
  model = create_model(cfg, seed=0)
  for kind in ("video", "audio"):
    levels = getattr(cfg, kind).levels
    emb, rows = model.digit_embed[kind], np.asarray(model.digit_embed[kind].rows[...])
    offsets = np.cumsum([0] + list(levels[:-1]))
    n = int(np.prod(levels))
    a, b = 0, 1 + levels[0]  # b differs from a in digits 0 and 1 only
    out = np.asarray(emb(jnp.asarray([a, b, n, n + 5]), jnp.float32))
    np.testing.assert_allclose(out[1] - out[0], rows[offsets[0] + 1] - rows[offsets[0]] + rows[offsets[1] + 1]
                               - rows[offsets[1]], atol=1e-5)
    np.testing.assert_allclose(out[0], rows[offsets].sum(0), atol=1e-5)  # code 0: every digit at value 0
    assert not out[2:].any(), f"{kind}: MISSING / padding ids must get no digit rows"
    # the model's code embedding is the table row plus the digits' rows; text has no digits
    tok = jnp.asarray([a, b])
    np.testing.assert_allclose(np.asarray(model.embed_kind(tok, kind)),
                               np.asarray(model.embed[kind][...])[[a, b]] + out[:2], atol=1e-5)
  np.testing.assert_array_equal(np.asarray(model.embed_kind(jnp.asarray([3, 7]), "text")),
                                np.asarray(model.embed["text"][...])[[3, 7]])


def test_digit_rows_are_trained():
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train.state import create_train_state
  from wan_streamer_jax.train.step import make_train_step
  cfg = tiny_config(**{"model.code_digit_embed": True, "model.num_layers": 1})
  mesh = make_mesh(cfg.mesh, jax.devices()[:1])
  ts = create_train_state(cfg, mesh)
  before = jax.tree.map(np.asarray, ts.state[0]["digit_embed"])
  step = make_train_step(cfg, ts, mesh)
  batch = random_batch(cfg, 4, 4, seed=2)
  state, m0 = step(ts.state, batch)
  state, m1 = step(state, batch)
  assert np.isfinite(float(m0["loss"])) and float(m1["loss"]) < float(m0["loss"])
  after = jax.tree.map(np.asarray, state[0]["digit_embed"])
  for kind in ("video", "audio"):
    assert np.abs(after[kind]["rows"][...] - before[kind]["rows"][...]).max() > 0, kind


@pytest.mark.parametrize("overrides", [{}, {"model.code_digit_embed": True, "model.depth_layers": 2}])
def test_analytic_parameter_count_is_the_models(overrides):
  from flax import nnx
  from wan_streamer_jax.model.flops import model_cost
  cfg = tiny_config(**overrides)
  counted = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(create_model(cfg), nnx.Param)))
  assert model_cost(cfg).params == counted


def test_code_digit_embed_must_be_a_bool():
  from wan_streamer_jax.config import ModelConfig
  with pytest.raises(ValueError, match="model.code_digit_embed"):
    ModelConfig(code_digit_embed=1)
  with pytest.raises(TypeError, match="code_digit_embed"):  # the config file's override is refused by name too
    tiny_config(**{"model.code_digit_embed": 1})
