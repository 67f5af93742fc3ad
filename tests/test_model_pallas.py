"""The tiny model's loss and gradients with the Pallas kernel (interpret mode) equal those with xla."""

import jax
import numpy as np
from flax import nnx

from tests.helpers import random_batch, tiny_config
from wan_streamer_jax.model.losses import next_unit_loss
from wan_streamer_jax.model.transformer import create_model


def _loss_and_grads(impl):
  cfg = tiny_config(**{"model.attention_impl": impl, "model.window_units": 3, "model.sink_units": 1})
  model = create_model(cfg, seed=3)
  batch = random_batch(cfg, 2, 6, seed=5, packed=True)

  def loss_fn(m):
    logits = m(batch["tokens"], batch["segment_ids"], batch["unit_ids"])
    return next_unit_loss(cfg, logits, batch["tokens"], batch["segment_ids"])[0]

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  return float(loss), jax.tree.leaves(nnx.state(grads, nnx.Param))


def test_pallas_model_loss_and_grads_equal_xla():
  loss_x, grads_x = _loss_and_grads("xla")
  loss_p, grads_p = _loss_and_grads("pallas")
  assert abs(loss_p - loss_x) <= 1e-5 * abs(loss_x)
  assert len(grads_x) == len(grads_p) > 10
  for gx, gp in zip(grads_x, grads_p):
    gx, gp = np.asarray(gx), np.asarray(gp)
    np.testing.assert_allclose(gp, gx, rtol=1e-5, atol=1e-5 * max(1e-3, np.abs(gx).max()))
