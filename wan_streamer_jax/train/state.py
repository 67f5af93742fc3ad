"""Sharded creation of the train state (model + optimizer) on a mesh.

The state is created inside `jax.jit` with `out_shardings` taken from the
logical axis names, so no host ever holds a full unsharded copy.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from wan_streamer_jax.config import Config
from wan_streamer_jax.model.transformer import WanStreamer
from wan_streamer_jax.parallel.rules import axis_rules
from wan_streamer_jax.train.optimizer import make_optimizer


@dataclasses.dataclass(frozen=True)
class TrainState:
  """`graphdef` (static) and `state` (sharded pytree of model + optimizer)."""

  graphdef: nnx.GraphDef
  state: nnx.State
  shardings: nnx.State  # NamedSharding per leaf of `state`


def _build(cfg: Config, seed: int):
  with nnx.use_eager_sharding(False):
    model = WanStreamer(cfg, rngs=nnx.Rngs(seed))
    opt = nnx.Optimizer(model, make_optimizer(cfg.optimizer), wrt=nnx.Param)
  return nnx.split((model, opt))


def state_shardings(abstract_state: nnx.State, mesh) -> nnx.State:
  """NamedSharding for every leaf from its logical names (via the rules table).

  Raises a ValueError naming the parameter, its shape and the mesh axes when a
  sharded dimension does not divide.
  """
  with axis_rules():
    specs = nnx.get_partition_spec(abstract_state)

  def to_sharding(path, leaf, spec):
    spec = spec.get_value() if isinstance(spec, nnx.Variable) else spec
    spec = spec if isinstance(spec, PartitionSpec) else PartitionSpec()
    for dim, axes in zip(leaf.shape, spec):
      if axes is None:
        continue
      size = 1
      for a in (axes if isinstance(axes, tuple) else (axes,)):
        size *= mesh.shape[a]
      if dim % size:
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        raise ValueError(f"parameter {name} with shape {leaf.shape}: dimension {dim} is sharded over mesh "
                         f"axes {axes} of total size {size}, which does not divide it; change the mesh "
                         f"or the model config")
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(
      to_sharding, abstract_state, specs,
      is_leaf=lambda x: isinstance(x, nnx.Variable) or isinstance(x, PartitionSpec))


def abstract_train_state(cfg: Config, mesh, seed: int | None = None) -> TrainState:
  """Shapes, dtypes and target shardings only (nothing allocated): the restore target."""
  seed = cfg.train.seed if seed is None else seed
  graphdef, abstract = nnx.eval_shape(lambda: _build(cfg, seed))
  shardings = state_shardings(abstract, mesh)
  abstract = jax.tree.map(
      lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)), abstract, shardings,
      is_leaf=lambda x: isinstance(x, nnx.Variable))
  return TrainState(graphdef, abstract, shardings)


def create_train_state(cfg: Config, mesh, seed: int | None = None) -> TrainState:
  """Initialises model + optimizer directly into their shardings (inside `jax.jit`)."""
  seed = cfg.train.seed if seed is None else seed
  ts = abstract_train_state(cfg, mesh, seed)
  state = jax.jit(lambda: _build(cfg, seed)[1], out_shardings=ts.shardings)()
  return TrainState(ts.graphdef, state, ts.shardings)


def replicated_fraction(ts: TrainState) -> float:
  """Fraction of model parameter elements that are fully replicated.

  On a mesh that shards (fsdp or tensor > 1), more than a few percent
  replicated means a rules-table bug (MaxText fails such runs at 2%).
  """
  total = repl = 0
  shardings = jax.tree.leaves(ts.shardings[0], is_leaf=lambda x: isinstance(x, NamedSharding))
  for leaf, sh in zip(jax.tree.leaves(ts.state[0]), shardings):
    n = int(np.prod(leaf.shape))
    total += n
    repl += n if all(a is None for a in sh.spec) else 0
  return repl / max(total, 1)
