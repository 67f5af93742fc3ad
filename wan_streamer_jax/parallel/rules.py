"""The one table mapping logical axis names onto mesh axes `(data, fsdp, tensor)`.

Every parameter (via `nnx.with_partitioning`) and every activation constraint
names its axes logically; only this table knows the mesh. Changing the
parallelism of a run is a config change (mesh shape), never a code change.
"""

from __future__ import annotations

import jax
from flax.core import spmd as flax_spmd
from jax.sharding import PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis / tuple of mesh axes / None (replicated)
LOGICAL_RULES: tuple[tuple[str, object], ...] = (
    ("batch", ("data", "fsdp")),   # activations and data: batch over data x fsdp
    ("seq", None),
    ("act_embed", None),           # residual stream: replicated embed (weights are gathered)
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("embed", "fsdp"),             # parameters: FSDP over the model dimension
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("norm", None),
    ("layers", None),
    ("table", None),               # small role / level embedding tables
)


def axis_rules():
  """Context manager that activates `LOGICAL_RULES` for flax's spec resolution."""
  return flax_spmd.logical_axis_rules(LOGICAL_RULES)


def logical_to_spec(names) -> PartitionSpec:
  """`("batch", "seq", "act_embed")` -> `PartitionSpec(("data", "fsdp"), None, None)`."""
  table = dict(LOGICAL_RULES)
  for n in names:
    if n is not None and n not in table:
      raise ValueError(f"logical axis name {n!r} is not in the rules table {sorted(table)}")
  return PartitionSpec(*(table[n] if n is not None else None for n in names))


def constrain(x: jax.Array, names) -> jax.Array:
  """Sharding constraint by logical names; a no-op when no mesh is set."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names))
