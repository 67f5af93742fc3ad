"""The jitted, sharded, state-donating train step."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding

from wan_streamer_jax.config import Config
from wan_streamer_jax.model.losses import next_unit_loss, weighted_groups
from wan_streamer_jax.parallel.rules import logical_to_spec
from wan_streamer_jax.train.feed import BATCH_KEYS, batch_keys
from wan_streamer_jax.train.own_history import with_own_history
from wan_streamer_jax.train.own_samples import step_key, with_own_predictions
from wan_streamer_jax.train.state import TrainState


def batch_shardings(mesh, keys: tuple[str, ...] = BATCH_KEYS) -> dict:
  """One `("batch", "seq")` sharding per batch key (`feed.batch_keys(cfg)` for a config's batches)."""
  s = NamedSharding(mesh, logical_to_spec(("batch", "seq")))
  return {k: s for k in keys}


def batch_shards(mesh) -> int:
  """How many shards the batch axis is split into on `mesh` (the product of the mesh axes "batch" maps to)."""
  axes = logical_to_spec(("batch",))[0]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  return int(np.prod([mesh.shape[a] for a in axes], dtype=np.int64))


def _loss(cfg: Config, model, batch: dict, groups=None):
  logits = model(batch["tokens"], batch["segment_ids"], batch["unit_ids"], depth_tokens=batch.get("target_tokens"),
                 groups=groups)
  return next_unit_loss(cfg, logits, batch["tokens"], batch["segment_ids"], batch["unit_ids"],
                        batch.get("target_tokens"), batch.get("loss_marks"), groups=groups)


def make_train_step(cfg: Config, ts: TrainState, mesh) -> Callable:
  """Returns `step(state, batch) -> (state, metrics)`.

  `batch`: dict of int32 `[batch, units * L]` arrays `tokens`, `segment_ids`,
  `unit_ids` (and `target_tokens`, `loss_marks`: `feed.batch_keys(cfg)`). Jitted with explicit in/out
  shardings from the rules table; the state argument is donated (rebind it: `state, m = step(state, batch)`).
  With `train.own_stream_sampling > 0` the step first mixes the model's own predictions into the out-slot
  inputs (`own_samples.with_own_predictions`, keyed by the optimizer step); with `train.own_history > 0`
  it first rolls the model out over the window and feeds it its own draws (`own_history.with_own_history`).
  Logits, and so the `loss/<group>` / `acc/<group>` metrics, cover only `losses.weighted_groups(cfg)`.
  """
  graphdef = ts.graphdef
  groups = weighted_groups(cfg)

  def step(state, batch):
    model, opt = nnx.merge(graphdef, state)
    if cfg.train.own_stream_sampling > 0:  # scheduled sampling: a no-gradient forward picks the inputs
      batch = with_own_predictions(cfg, model, batch, step_key(cfg, opt.step[...]))
    own = {}
    if cfg.train.own_history > 0:  # a no-gradient rollout of the window picks the inputs
      batch, own = with_own_history(cfg, model, batch, jax.random.fold_in(step_key(cfg, opt.step[...]), 1),
                                    shards=batch_shards(mesh))

    # only the groups the loss weighs get logits (the demo's video_in weighs 0: 4 of its 48 slots per unit
    # through an 8000-way head); the eval step computes every group's, for its metrics
    (_, metrics), grads = nnx.value_and_grad(lambda m: _loss(cfg, m, batch, groups), has_aux=True)(model)
    metrics.update(own)
    metrics["grad_norm"] = optax.tree.norm(grads)
    opt.update(model, grads)
    return nnx.state((model, opt)), metrics

  jitted = jax.jit(step, in_shardings=(ts.shardings, batch_shardings(mesh, batch_keys(cfg))),
                   out_shardings=(ts.shardings, None), donate_argnums=0)

  def run(state, batch):
    with jax.set_mesh(mesh):  # activation constraints resolve against this mesh at trace time
      return jitted(state, batch)

  run.jitted = jitted
  return run


def make_eval_step(cfg: Config, ts: TrainState, mesh) -> Callable:
  """`eval_step(state, batch) -> metrics` (the train step's loss metrics, no update; nothing donated)."""
  graphdef = ts.graphdef

  def step(state, batch):
    model, _ = nnx.merge(graphdef, state)
    return _loss(cfg, model, batch)[1]

  jitted = jax.jit(step, in_shardings=(ts.shardings, batch_shardings(mesh, batch_keys(cfg))), out_shardings=None)

  def run(state, batch):
    with jax.set_mesh(mesh):
      return jitted(state, batch)

  return run
