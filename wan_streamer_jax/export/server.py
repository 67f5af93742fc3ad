"""Loads and runs a serving artifact (see `writer.py`) without the model's Python code.

    server = load_server("/tmp/art")
    state = server.init_state(seed=0)                      # flat {name: device array}
    state, outputs = server.step(state, inputs, active, reset)   # outputs: {name: numpy array}

Imports numpy, jax and `wan_streamer_jax.export.specs` only: the serving
process never imports `wan_streamer_jax.model` (tested). Every input is checked
against the manifest (names, shapes, dtypes, value ranges, NaN audio, slot
count) in numpy before the exported function is called: a rejected unit raises
`ValueError` and leaves the session state untouched and usable.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from wan_streamer_jax.checksums import file_sha256
from wan_streamer_jax.export import specs as S

SUPPORTED_FORMAT_VERSIONS = (1,)
_FILES = ("step.jaxexport", "init.jaxexport", "params.npz")


def read_manifest(path: str) -> dict:
  mpath = os.path.join(path, "manifest.json")
  if not os.path.isfile(mpath):
    raise ValueError(f"serving artifact {path}: expected manifest.json (written by launch/export.py), found none")
  try:
    with open(mpath) as f:
      manifest = json.load(f)
  except ValueError as e:
    raise ValueError(f"serving artifact {mpath}: not valid JSON ({e})") from e
  version = manifest.get("format_version")
  if version not in SUPPORTED_FORMAT_VERSIONS:
    raise ValueError(f"serving artifact {path}: format_version expected one of {SUPPORTED_FORMAT_VERSIONS}, "
                     f"received {version!r}")
  return manifest


def _verify_files(path: str, manifest: Mapping) -> None:
  for name in _FILES:
    fpath = os.path.join(path, name)
    if not os.path.isfile(fpath):
      raise ValueError(f"serving artifact {path}: missing {name}")
    expected, got = manifest["files"][name], file_sha256(fpath)
    if got != expected:
      raise ValueError(f"serving artifact {fpath}: sha256 expected {expected}, received {got} "
                       "(corrupt or modified file)")


def _load_params(path: str, manifest: Mapping) -> dict:
  out = {}
  with np.load(os.path.join(path, "params.npz")) as data:
    for name, spec in manifest["params"].items():
      arr = data[name]
      if spec["dtype"] == "bfloat16":
        arr = arr.view(S.np_dtype("bfloat16"))
      S.check_array(arr, spec, f"params.npz[{name!r}]", concrete=False)
      out[name] = arr
  return out


class Server:
  """A loaded serving artifact; `manifest` is the parsed manifest.json."""

  def __init__(self, path: str, *, verify: bool = True, device=None):
    self.path = os.path.abspath(path)
    self.manifest = read_manifest(self.path)
    if verify:
      _verify_files(self.path, self.manifest)
    platform = S.export_platform(jax.devices()[0].platform if device is None else device.platform)
    if platform not in self.manifest["platforms"]:
      raise ValueError(f"serving artifact {self.path}: lowered for platforms {self.manifest['platforms']}, "
                       f"this process runs on {platform!r}; re-export with --platforms including it")
    self.device = device or jax.devices()[0]
    try:
      with open(os.path.join(self.path, "step.jaxexport"), "rb") as f:
        self._step_exp = jax.export.deserialize(bytearray(f.read()))
      with open(os.path.join(self.path, "init.jaxexport"), "rb") as f:
        self._init_exp = jax.export.deserialize(bytearray(f.read()))
    except Exception as e:  # noqa: BLE001 — flatbuffer / version errors come in several types
      raise ValueError(f"serving artifact {self.path}: cannot deserialise the exported step with jax "
                       f"{jax.__version__} (exported with jax {self.manifest['versions']['jax']}): {e}") from e
    self.params = jax.device_put(_load_params(self.path, self.manifest), self.device)
    # The state is donated: the step updates it in place (rebind it: `state, out = server.step(state, ...)`).
    self._step = jax.jit(self._step_exp.call, donate_argnums=(1,))
    self._init = jax.jit(self._init_exp.call)

  @property
  def num_slots(self) -> int:
    return int(self.manifest["num_slots"])

  @property
  def input_specs(self) -> dict:
    return self.manifest["inputs"]

  @property
  def output_specs(self) -> dict:
    return self.manifest["outputs"]

  def init_state(self, seed: int = 0) -> dict:
    """A fresh state for all `num_slots` slots: flat `{name: device array}`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not -2**31 <= int(seed) < 2**31:
      raise ValueError(f"init_state: seed expected an int32 integer, received {seed!r}")
    return self._init(np.int32(seed))

  def silent_inputs(self) -> dict:
    """Zero inputs of the manifest's shapes and dtypes (fill values given by `"fill"` where set)."""
    return {n: np.full(s["shape"], s.get("fill", 0), S.np_dtype(s["dtype"])) for n, s in self.input_specs.items()}

  def check_inputs(self, inputs: Mapping[str, Any], active, reset) -> None:
    """ValueError naming the field, the expected and the received value; nothing is run."""
    S.check_flat(inputs, self.input_specs, "inputs")
    S.check_array(active, self.manifest["active"], f"active (one flag per slot, {self.num_slots} slots)")
    S.check_array(reset, self.manifest["reset"], f"reset (one flag per slot, {self.num_slots} slots)")

  def check_state(self, state: Mapping[str, Any]) -> None:
    try:
      S.check_flat(state, self.manifest["state"], "state", concrete=False)
    except ValueError as e:
      raise ValueError(f"{e} (a state from another artifact or config? use server.init_state())") from e

  def step(self, state: Mapping[str, Any], inputs: Mapping[str, Any], active=None, reset=None
           ) -> tuple[dict, dict]:
    """One 160 ms unit for every slot -> (new state, outputs as numpy, fetched in one device_get).

    `active`/`reset` default to all True / all False. `state` is donated: use the returned one.
    """
    active = np.ones(self.num_slots, bool) if active is None else active
    reset = np.zeros(self.num_slots, bool) if reset is None else reset
    self.check_inputs(inputs, active, reset)
    self.check_state(state)
    state, outputs = self._step(self.params, dict(state), dict(inputs), active, reset)
    return state, jax.device_get(outputs)


def load_server(path: str, *, verify: bool = True, device=None) -> Server:
  """Loads the artifact folder at `path` (checks the manifest, file hashes and platform)."""
  return Server(path, verify=verify, device=device)
