"""Writes a serving artifact: a pure streaming step serialised with `jax.export` + parameters + manifest.

The step is any pure function with pytrees of arrays

    step_fn(params, state, inputs, active, reset) -> (state, outputs)
    init_fn(seed) -> state          # seed: int32 scalar, traceable

(the streaming engine's `step_fn`, or a codec's pure steps). The artifact is a
folder:

    manifest.json    format version, config, unit layout, slot count, sample rate, fps,
                     platforms, and the flat specs (shape, dtype, range) of params,
                     state, inputs, active, reset and outputs; sha256 of every file
    step.jaxexport   jax.export serialisation of the flat step, lowered for every platform
    init.jaxexport   jax.export serialisation of the flat init_state(seed)
    params.npz       the parameters, flat {path: array} (numpy; no optimizer state);
                     bfloat16 is stored as its uint16 bit pattern

Every pytree is flattened to `{path name: array}` (see `specs.py`), so loading
needs neither the model's Python code nor any pytree registration. The slot
count is fixed at export time. The folder is written under a temporary name
and renamed into place at the end: a failed export never leaves a half
artifact, and an existing artifact is only replaced when the new one is
complete.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wan_streamer_jax.checksums import file_sha256
from wan_streamer_jax.export import specs as S

FORMAT_VERSION = 1
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
FILES = ("step.jaxexport", "init.jaxexport", "params.npz")
RESERVED_KEYS = frozenset({"format_version", "created", "versions", "platforms", "num_slots", "param_dtype", "params",
                           "state", "inputs", "active", "reset", "outputs", "files"})


def _check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
  platforms = tuple(platforms)
  bad = [p for p in platforms if p not in PLATFORMS]
  if not platforms or bad:
    raise ValueError(f"platforms: expected a non-empty subset of {PLATFORMS}, received {platforms}")
  return platforms


def _store_params(params_flat: Mapping[str, Any], param_dtype: str | None) -> tuple[dict, dict, dict]:
  """-> (numpy arrays to save, stored specs, compute dtypes). Only floating params are cast."""
  if param_dtype not in (None, "float32", "bfloat16"):
    raise ValueError(f"param_dtype: expected None, 'float32' or 'bfloat16', received {param_dtype!r}")
  arrays, stored, compute = {}, {}, {}
  for name, value in params_flat.items():
    arr = np.asarray(jax.device_get(value))
    compute[name] = arr.dtype.name
    if param_dtype and np.issubdtype(arr.dtype, np.floating):
      arr = arr.astype(S.np_dtype(param_dtype))
    stored[name] = {"shape": list(arr.shape), "dtype": arr.dtype.name}
    arrays[name] = arr.view(np.uint16) if arr.dtype.name == "bfloat16" else arr
  return arrays, stored, compute


def write_artifact(path: str, *, step_fn: Callable, init_fn: Callable, params, num_slots: int,
                   input_specs: Mapping[str, Mapping], platforms: Sequence[str] = ("cpu",),
                   param_dtype: str | None = None, metadata: Mapping[str, Any] | None = None,
                   overwrite: bool = False) -> dict:
  """Exports `step_fn`/`init_fn` with `params` to the folder `path`; returns the manifest.

  Args:
    path: artifact folder (created; must not exist unless `overwrite`).
    step_fn: pure `(params, state, inputs, active, reset) -> (state, outputs)`; `inputs` is a
      flat dict `{name: array}` with a leading slot axis `[num_slots, ...]`; active/reset bool `[S]`.
    init_fn: pure `(seed int32 []) -> state` for `num_slots` slots.
    params: pytree of arrays (inference parameters only).
    input_specs: name -> `{"shape", "dtype"[, "range", "finite"]}` (`spec_of(x, range=...)`).
    platforms: lowering platforms, e.g. ("cpu", "cuda", "tpu"): any machine can lower for all.
    param_dtype: None (as given) or "bfloat16" (stored and passed as bfloat16, cast back to the
      original dtype inside the step: half the bytes, the same computation on bfloat16-rounded
      weights).
    metadata: JSON-able extras recorded in the manifest (config, unit_layout, sample_rate, fps, ...).
  """
  platforms = _check_platforms(platforms)
  clash = sorted(set(metadata or {}) & RESERVED_KEYS)
  if clash:
    raise ValueError(f"metadata: keys {clash} are written by the exporter itself (reserved: {sorted(RESERVED_KEYS)})")
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite:
    raise ValueError(f"export path {path}: already exists (pass overwrite=True to replace it)")
  for name, spec in input_specs.items():
    if not spec["shape"] or spec["shape"][0] != num_slots:
      raise ValueError(f"input_specs[{name!r}]: expected a leading slot axis of {num_slots}, "
                       f"received shape {tuple(spec['shape'])}")

  params_flat, params_def = S.flatten(params)
  param_names = list(params_flat)
  arrays, stored_specs, compute_dtypes = _store_params(params_flat, param_dtype)
  state_abs = jax.eval_shape(init_fn, jnp.int32(0))
  state_abs_flat, state_def = S.flatten(state_abs)
  state_names = list(state_abs_flat)
  state_specs = {n: S.spec_of(a) for n, a in state_abs_flat.items()}
  input_names = list(input_specs)
  mask_spec = {"shape": [num_slots], "dtype": "bool"}

  def plain_state(state):
    flat, tdef = S.flatten(state)
    if tdef != state_def:
      raise ValueError(f"step_fn: returned a state of structure {tdef}, expected {state_def}")
    return {n: S.to_plain(flat[n]) for n in state_names}

  def flat_step(p_flat, s_flat, inputs, active, reset):
    p = S.unflatten(params_def, param_names, {n: p_flat[n].astype(compute_dtypes[n]) for n in param_names})
    s = S.unflatten(state_def, state_names, {n: S.from_plain(s_flat[n], state_specs[n]) for n in state_names})
    new_state, outputs = step_fn(p, s, {n: inputs[n] for n in input_names}, active, reset)
    out_flat, _ = S.flatten(outputs)
    return plain_state(new_state), out_flat

  def flat_init(seed):
    return plain_state(init_fn(seed))

  p_abs = S.shape_dtype_structs(stored_specs)
  s_abs = S.shape_dtype_structs(state_specs)
  i_abs = S.shape_dtype_structs(input_specs)
  m_abs = jax.ShapeDtypeStruct((num_slots,), jnp.bool_)
  step_exp = jax.export.export(jax.jit(flat_step), platforms=platforms)(p_abs, s_abs, i_abs, m_abs, m_abs)
  init_exp = jax.export.export(jax.jit(flat_init), platforms=platforms)(jax.ShapeDtypeStruct((), jnp.int32))
  _, out_abs = jax.eval_shape(flat_step, p_abs, s_abs, i_abs, m_abs, m_abs)
  output_specs = {n: S.spec_of(a) for n, a in out_abs.items()}

  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + ".partial-", dir=parent)
  os.chmod(tmp, 0o755)
  try:
    with open(os.path.join(tmp, "step.jaxexport"), "wb") as f:
      f.write(step_exp.serialize())
    with open(os.path.join(tmp, "init.jaxexport"), "wb") as f:
      f.write(init_exp.serialize())
    np.savez(os.path.join(tmp, "params.npz"), **arrays)
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"jax": jax.__version__, "wan_streamer_jax": _package_version(),
                     "calling_convention": step_exp.calling_convention_version},
        "platforms": list(platforms),
        "num_slots": int(num_slots),
        "param_dtype": param_dtype or "as_trained",
        "params": {n: {**stored_specs[n], "compute_dtype": compute_dtypes[n]} for n in param_names},
        "state": state_specs,
        "inputs": {n: dict(input_specs[n]) for n in input_names},
        "active": mask_spec, "reset": mask_spec,
        "outputs": output_specs,
        "files": {name: file_sha256(os.path.join(tmp, name)) for name in FILES},
        **dict(metadata or {}),
    }
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
      json.dump(manifest, f, indent=1, sort_keys=True)
    if os.path.exists(path):
      old = tempfile.mkdtemp(prefix=os.path.basename(path) + ".old-", dir=parent)
      os.replace(path, os.path.join(old, "artifact"))
      os.replace(tmp, path)
      shutil.rmtree(old)
    else:
      os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return manifest


def _package_version() -> str:
  from wan_streamer_jax import __version__
  return __version__
