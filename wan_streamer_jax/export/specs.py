"""Flat named array specs and their checks: what the serving manifest records and validates.

A serving artifact never exposes a pytree structure: parameters, state, inputs
and outputs are flat `{name: array}` dicts whose names are the pytree paths
(`"model/blocks/attn/q/kernel"`). A spec is the JSON-able
`{"shape": [..], "dtype": "float32"}` (+ optional `"range": [lo, hi]`, the
closed interval the values must lie in, and `"finite": true`).

PRNG key arrays (`jax.random.key`) are stored as their raw `uint32` key data
with `"prng_impl"` naming the implementation, so the serialised function, the
parameter file and a client see only plain numeric arrays.

This module imports numpy and jax only (the serving side loads it without the
model code).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

try:  # ml_dtypes ships with jax; it gives numpy a bfloat16 dtype
  import ml_dtypes
  _EXTRA_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16)}
except ImportError:  # pragma: no cover
  _EXTRA_DTYPES = {}


def export_platform(platform: str) -> str:
  """A jax device platform as `jax.export` names it ("gpu" -> "cuda"; "cpu", "tpu" unchanged)."""
  return {"gpu": "cuda"}.get(platform, platform)


def np_dtype(name: str) -> np.dtype:
  return _EXTRA_DTYPES.get(name) or np.dtype(name)


def path_name(path) -> str:
  """`"model/blocks/attn/q/kernel"` (nnx Variables' trailing `/value` dropped)."""
  return jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")


def is_prng_key(x) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def flatten(tree) -> tuple[dict, Any]:
  """pytree -> (`{path name: leaf}`, treedef). Names are unique: they are the leaves' paths."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  flat = {}
  for path, leaf in leaves:
    name = path_name(path) or "value"
    if name in flat:
      raise ValueError(f"flatten: two leaves share the path name {name!r}; use distinct dict keys")
    flat[name] = leaf
  return flat, treedef


def unflatten(treedef, names: list[str], flat: Mapping[str, Any]):
  return jax.tree.unflatten(treedef, [flat[n] for n in names])


def spec_of(x, **extra) -> dict:
  """JSON spec of an array (or ShapeDtypeStruct); PRNG keys become their uint32 key data."""
  if is_prng_key(x):
    data = jax.eval_shape(jax.random.key_data, x)
    return {"shape": [int(d) for d in data.shape], "dtype": "uint32", "prng_impl": x.dtype._impl.name,
            **extra}
  return {"shape": [int(d) for d in x.shape], "dtype": np.dtype(x.dtype).name, **extra}


def to_plain(x):
  """A PRNG key array -> its uint32 key data; anything else unchanged (traceable)."""
  return jax.random.key_data(x) if is_prng_key(x) else x


def from_plain(x, spec: Mapping):
  """Inverse of `to_plain` for one leaf, given its spec (traceable)."""
  impl = spec.get("prng_impl")
  return jax.random.wrap_key_data(x, impl=impl) if impl else x


def shape_dtype_structs(specs: Mapping[str, Mapping]) -> dict:
  return {n: jax.ShapeDtypeStruct(tuple(s["shape"]), np_dtype(s["dtype"])) for n, s in specs.items()}


def describe(x) -> str:
  dtype = getattr(x, "dtype", None)
  shape = getattr(x, "shape", None)
  if dtype is None or shape is None:
    return type(x).__name__
  return f"shape {tuple(int(d) for d in shape)} dtype {np.dtype(dtype).name}"


def check_array(value, spec: Mapping, field: str, *, concrete: bool = True) -> None:
  """ValueError naming `field`, the expected shape/dtype/range and what was received."""
  shape, dtype = tuple(spec["shape"]), np_dtype(spec["dtype"])
  got_dtype = getattr(value, "dtype", None)
  got_shape = getattr(value, "shape", None)
  if got_dtype is None or got_shape is None:
    raise ValueError(f"{field}: expected an array of shape {shape} dtype {dtype.name}, "
                     f"received {type(value).__name__}")
  if tuple(got_shape) != shape:
    raise ValueError(f"{field}: expected shape {shape} (dtype {dtype.name}), received shape "
                     f"{tuple(int(d) for d in got_shape)}")
  if np.dtype(got_dtype) != dtype:
    raise ValueError(f"{field}: expected dtype {dtype.name} (shape {shape}), received dtype "
                     f"{np.dtype(got_dtype).name}")
  if not concrete or isinstance(value, jax.core.Tracer) or not value.size:
    return
  arr = np.asarray(value)
  if np.issubdtype(dtype, np.floating) and (spec.get("finite") or "range" in spec):
    bad = ~np.isfinite(arr)
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"{field}: expected finite values, received {int(bad.sum())} NaN/inf "
                       f"(first at index {idx}: {arr[idx]})")
  if "range" in spec:
    lo, hi = spec["range"]
    amin, amax = arr.min(), arr.max()
    if amin < lo or amax > hi:
      raise ValueError(f"{field}: expected values in [{lo}, {hi}], received values in [{amin}, {amax}]")


def check_flat(values, specs: Mapping[str, Mapping], what: str, *, concrete: bool = True) -> None:
  """Checks a `{name: array}` dict against `{name: spec}`: same names, then every array."""
  if not isinstance(values, Mapping):
    raise ValueError(f"{what}: expected a dict with keys {sorted(specs)}, received {type(values).__name__}")
  missing, extra = sorted(set(specs) - set(values)), sorted(set(values) - set(specs))
  if missing or extra:
    raise ValueError(f"{what}: expected keys {sorted(specs)}, received {sorted(values)} "
                     f"(missing {missing}, unexpected {extra})")
  for name, spec in specs.items():
    check_array(values[name], spec, f"{what}[{name!r}]", concrete=concrete)
