"""The train step honours the config: the remat policy reaches the compiled layer scan."""

import jax
import numpy as np
import pytest

from tests.helpers import tiny_config
from wan_streamer_jax.config import MeshConfig
from wan_streamer_jax.parallel.mesh import make_mesh
from wan_streamer_jax.train.state import abstract_train_state
from wan_streamer_jax.train.step import make_train_step

_POLICIES = {"none": None, "full": "full", "dots": jax.checkpoint_policies.checkpoint_dots,
             "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims}


def _remat_policies(jaxpr) -> list:
  """The `policy` of every remat (`checkpoint`) equation, searched through all sub-jaxprs."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ("checkpoint", "remat", "remat2"):
      found.append(eqn.params.get("policy") or "full")
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else [v]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found.extend(_remat_policies(inner))
  return found


@pytest.mark.parametrize("policy", sorted(_POLICIES))
def test_remat_policy_reaches_the_layer_scan(policy):
  cfg = tiny_config(**{"model.remat_policy": policy, "model.num_layers": 1})
  mesh = make_mesh(MeshConfig(), jax.devices()[:1])
  ts = abstract_train_state(cfg, mesh)
  step = make_train_step(cfg, ts, mesh)
  shape = (cfg.train.batch_size, 2 * 32)
  batch = {k: jax.ShapeDtypeStruct(shape, np.int32) for k in ("tokens", "segment_ids", "unit_ids")}
  with jax.set_mesh(mesh):
    jaxpr = jax.make_jaxpr(step.jitted)(ts.state, batch).jaxpr
  found = _remat_policies(jaxpr)
  if _POLICIES[policy] is None:
    assert found == [], found
  else:
    assert found and all(p == _POLICIES[policy] for p in found), (policy, found)


def test_an_evaluation_split_smaller_than_one_batch_is_refused_before_training():
  from data_pipelines.token_data import RandomTokenSource
  from wan_streamer_jax.config import ConfigError
  from wan_streamer_jax.train.transformer_task import transformer_task
  cfg = tiny_config(**{"train.batch_size": 4})
  mesh = make_mesh(MeshConfig(data=-1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  units = cfg.train.units_per_example
  small = RandomTokenSource(cfg, 2, min_units=units, max_units=units, seed=0)  # 2 full windows < 4 rows
  with pytest.raises(ConfigError, match=r"eval_source: 2 conversations give less than one evaluation batch of 4"):
    transformer_task(cfg, mesh, eval_source=small)
  enough = RandomTokenSource(cfg, 8, min_units=units, max_units=units, seed=0)
  assert transformer_task(cfg, mesh, eval_source=enough).evaluate is not None


def test_groups_the_loss_weighs_zero_get_no_logits_and_the_loss_and_gradients_stay_the_same():
  """The train step's logits cover only `weighted_groups(cfg)`: the same loss and gradients as with every
  group's logits, fewer compiled FLOPs; `audio_in` is a depth kind's in group (its out group comes from
  the depth head)."""
  from flax import nnx

  from wan_streamer_jax import schedule
  from wan_streamer_jax.model.losses import next_unit_loss, weighted_groups
  from wan_streamer_jax.model.transformer import create_model
  from wan_streamer_jax.train.step import _loss
  from tests.helpers import random_batch
  zero = ("video_in", "audio_in")
  cfg = tiny_config(**{f"loss.{g}": 0.0 for g in zero}, **{"model.depth_layers": 1})
  groups = weighted_groups(cfg)
  assert set(groups) == {"video_in", "audio_in", "text_in", "video_out", "audio_out", "text_out"} - set(zero)
  model = create_model(cfg, seed=0)
  batch = random_batch(cfg, 2, 3, seed=1, packed=True)
  graphdef, state = nnx.split(model)
  layout = schedule.unit_layout(cfg)
  shapes = jax.eval_shape(lambda s: nnx.merge(graphdef, s)(batch["tokens"], batch["segment_ids"], batch["unit_ids"],
                                                           groups=groups), state)
  assert shapes["video"].shape[1] == 3 * layout.group_size("video_out"), shapes["video"].shape
  assert shapes["audio"].shape[1] == 3 * layout.group_size("audio_out"), shapes["audio"].shape

  def compiled(groups):
    fn = lambda s: _loss(cfg, nnx.merge(graphdef, s), batch, groups)  # noqa: E731
    return jax.jit(jax.value_and_grad(fn, has_aux=True)).lower(state).compile()

  c_full, c_part = compiled(None), compiled(groups)
  assert c_part.cost_analysis()["flops"] < c_full.cost_analysis()["flops"]
  (full, m_full), g_full = c_full(state)
  (part, m_part), g_part = c_part(state)
  np.testing.assert_allclose(float(part), float(full), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_part), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)
  assert all(f"loss/{g}" in m_full and f"loss/{g}" not in m_part for g in zero)
  assert all(np.isclose(float(m_part[f"loss/{g}"]), float(m_full[f"loss/{g}"]), rtol=1e-6) for g in groups)
  from wan_streamer_jax.model import flops
  weighs_all = cfg.replace(loss={g: 1.0 for g in zero})
  assert flops.train_flops_per_token(cfg) < flops.train_flops_per_token(weighs_all)
  with pytest.raises(ValueError, match=r"groups: expected every group the loss weighs"):
    next_unit_loss(cfg, {}, batch["tokens"], batch["segment_ids"], groups=("video_out",))
