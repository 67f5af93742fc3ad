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
