"""Overfitting one fixed batch of the tiny config drives the loss below 10% of its start."""

import jax

from tests.helpers import random_batch, tiny_config
from wan_streamer_jax.parallel.mesh import make_mesh
from wan_streamer_jax.train.state import create_train_state
from wan_streamer_jax.train.step import make_train_step


def test_overfit_one_batch():
  cfg = tiny_config(**{"optimizer.learning_rate": 1e-2, "optimizer.warmup_steps": 5,
                       "optimizer.decay_steps": 400, "optimizer.weight_decay": 0.0,
                       "loss.video_in": 1.0, "loss.audio_in": 1.0, "loss.text_in": 1.0})
  mesh = make_mesh(cfg.mesh, jax.devices()[:1])
  ts = create_train_state(cfg, mesh)
  step = make_train_step(cfg, ts, mesh)
  batch = random_batch(cfg, 2, 4, seed=7)
  state, losses = ts.state, []
  for _ in range(150):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
