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
