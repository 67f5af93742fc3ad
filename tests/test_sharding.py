"""The sharded train step: 8 fake devices (data=2, fsdp=2, tensor=2) == 1 device."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tests.helpers import random_batch, tiny_config
from wan_streamer_jax.parallel.mesh import make_mesh
from wan_streamer_jax.train.state import create_train_state, replicated_fraction
from wan_streamer_jax.train.step import make_train_step


def _run(cfg, devices, batch, steps=2):
  mesh = make_mesh(cfg.mesh, devices)
  ts = create_train_state(cfg, mesh)
  step = make_train_step(cfg, ts, mesh)
  state, losses = ts.state, []
  for _ in range(steps):
    state, metrics = step(state, batch)
    losses.append((float(metrics["loss"]), float(metrics["grad_norm"])))
  return ts, state, losses


@pytest.fixture(scope="module")
def runs():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (set by conftest)")
  # Adam divides by |g| + eps: for |g| <~ eps the float32 reduction-order noise of a sharded
  # gradient is amplified up to the learning rate. eps=1e-5 keeps that below the 1e-5 tolerance.
  base = {"model.attention_impl": "xla", "optimizer.warmup_steps": 1, "optimizer.eps": 1e-5,
          "model.depth_layers": 1}
  cfg8 = tiny_config(**base, **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  cfg1 = tiny_config(**base)
  batch = random_batch(cfg1, 4, 6, seed=0, packed=True)
  return _run(cfg8, jax.devices(), batch), _run(cfg1, jax.devices()[:1], batch)


def test_sharded_step_matches_single_device(runs):
  (_, state8, losses8), (_, state1, losses1) = runs
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  assert losses8[1][0] < losses8[0][0]  # the first step really updated the parameters
  for a, b in zip(jax.tree.leaves(state8), jax.tree.leaves(state1)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_parameters_are_sharded_as_the_rules_say(runs):
  (ts8, state8, _), _ = runs
  model_state = state8[0]
  assert model_state["blocks"]["attn"]["wq"].get_value().sharding.spec == P(None, "fsdp", "tensor", None)
  assert model_state["blocks"]["mlp"]["down"].get_value().sharding.spec == P(None, "tensor", "fsdp")
  assert model_state["embed"]["video"].get_value().sharding.spec == P("tensor", "fsdp")
  assert model_state["heads"]["text"].get_value().sharding.spec == P("fsdp", "tensor")
  assert model_state["final_norm"]["scale"].get_value().sharding.spec == P(None)
  depth = model_state["depth"]
  assert depth["blocks"][0]["attn"]["wqkv"].get_value().sharding.spec == P("fsdp", None, "tensor", None)
  assert depth["blocks"][0]["mlp"]["wi"].get_value().sharding.spec == P("fsdp", None, "tensor")
  assert depth["pos_embed"].get_value().sharding.spec == P(None, "fsdp")
  wq = model_state["blocks"]["attn"]["wq"].get_value()
  assert wq.addressable_shards[0].data.shape == (wq.shape[0], wq.shape[1] // 2, wq.shape[2] // 2, wq.shape[3])
  # optimizer moments follow their parameters
  assert replicated_fraction(ts8) < 0.02  # only norms and the role/level tables
  adam = state8[1]["opt_state"][1][0]
  assert adam["mu"]["blocks"]["attn"]["wq"].get_value().sharding.spec == P(None, "fsdp", "tensor", None)
  assert adam["nu"]["blocks"]["mlp"]["down"].get_value().sharding.spec == P(None, "tensor", "fsdp")


def test_indivisible_mesh_is_a_clear_error():
  cfg = tiny_config(**{"mesh.tensor": 8})
  with pytest.raises(ValueError, match=r"kv_heads|dimension 2 is sharded over mesh axes tensor of total size 8"):
    create_train_state(cfg, make_mesh(cfg.mesh))
