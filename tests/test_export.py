"""Serving artifact: jax.export step + flat params + manifest, loaded in a process without the model code."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import ROOT, tiny_config
from wan_streamer_jax.codecs import AudioCodec
from wan_streamer_jax.export import load_server, read_manifest, write_artifact
from wan_streamer_jax.export.specs import spec_of

S = 3


def _codec_pool(cfg):
  """A pool step built on the audio codec's pure steps: encode -> decode, per-slot RNG, unit counter."""
  fns, params = AudioCodec(cfg.audio, rngs=nnx.Rngs(0)).functional()

  def init_fn(seed):
    return {"codec": fns.init_state(S), "unit": jnp.zeros((S,), jnp.int32),
            "rng": jax.random.split(jax.random.key(seed), S)}

  def step_fn(p, state, inputs, active, reset):
    sel = lambda m, a, b: jnp.where(m.reshape(m.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
    fresh = init_fn(0)
    state = jax.tree.map(lambda f, s: sel(reset, f, s), fresh, state)
    cs, codes = fns.encode_step(p, state["codec"], inputs["audio"])
    cs, y = fns.decode_step(p, cs, codes)
    noise = jax.vmap(lambda k: jax.random.uniform(k, ()))(state["rng"])
    new = {"codec": cs, "unit": state["unit"] + 1, "rng": jax.vmap(lambda k: jax.random.split(k)[0])(state["rng"])}
    new = jax.tree.map(lambda n, o: sel(active, n, o), new, state)
    return new, {"audio": y * active[:, None], "codes": codes, "unit": state["unit"], "noise": noise}

  specs = {"audio": spec_of(jax.ShapeDtypeStruct((S, cfg.audio.samples_per_unit), jnp.float32), range=[-1, 1])}
  return step_fn, init_fn, params, specs


@pytest.fixture(scope="module")
def pool():
  return _codec_pool(tiny_config())


@pytest.fixture(scope="module")
def artifact(pool, tmp_path_factory):
  step_fn, init_fn, params, specs = pool
  path = str(tmp_path_factory.mktemp("art") / "codec_pool")
  write_artifact(path, step_fn=step_fn, init_fn=init_fn, params=params, num_slots=S, input_specs=specs,
                 platforms=("cpu", "cuda", "tpu"), metadata={"sample_rate": 16000, "fps": 25})
  return path


def _schedule(units, spu, seed=0):
  rng = np.random.default_rng(seed)
  audio = (0.5 * np.sin(np.arange(units * spu) / 7.0)[None] * rng.uniform(0.2, 1, (S, 1))).astype(np.float32)
  audio = audio.reshape(S, units, spu).transpose(1, 0, 2)
  active = rng.random((units, S)) > 0.2
  reset = np.zeros((units, S), bool)
  reset[0] = True
  reset[min(30, units - 1), 1] = True
  return audio, active, reset


_CLIENT = r"""
import sys, numpy as np
from wan_streamer_jax.export import load_server
server = load_server(sys.argv[1])
d = np.load(sys.argv[2])
state = server.init_state(seed=7)
outs = {}
for u in range(d["audio"].shape[0]):
  state, o = server.step(state, {"audio": d["audio"][u]}, d["active"][u], d["reset"][u])
  for k, v in o.items():
    outs.setdefault(k, []).append(v)
np.savez(sys.argv[3], **{k: np.stack(v) for k, v in outs.items()})
bad = sorted(m for m in sys.modules if m.startswith("wan_streamer_jax") and not
             (m == "wan_streamer_jax" or m.startswith("wan_streamer_jax.export")))
print("IMPORTED", bad, "flax" in sys.modules)
"""


def test_fresh_process_without_model_code_matches_in_process_step(pool, artifact, tmp_path):
  step_fn, init_fn, params, _ = pool
  spu = tiny_config().audio.samples_per_unit
  audio, active, reset = _schedule(50, spu)
  np.savez(tmp_path / "in.npz", audio=audio, active=active, reset=reset)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS="")
  res = subprocess.run([sys.executable, "-c", _CLIENT, artifact, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "IMPORTED [] False" in res.stdout, res.stdout   # neither the model, the codecs nor flax

  step = jax.jit(step_fn)
  state = init_fn(jnp.int32(7))
  got = np.load(tmp_path / "out.npz")
  for u in range(50):
    state, ref = step(params, state, {"audio": audio[u]}, active[u], reset[u])
    for k, v in jax.device_get(ref).items():
      np.testing.assert_array_equal(got[k][u], v, err_msg=f"{k} at unit {u}")
  assert np.abs(got["audio"]).max() > 0 and len(np.unique(got["noise"])) > 50


def test_manifest_records_specs_versions_and_platforms(artifact):
  m = read_manifest(artifact)
  assert m["platforms"] == ["cpu", "cuda", "tpu"] and m["num_slots"] == S and m["sample_rate"] == 16000
  assert m["inputs"]["audio"] == {"shape": [S, 2560], "dtype": "float32", "range": [-1, 1]}
  assert m["active"] == {"shape": [S], "dtype": "bool"}
  assert m["state"]["rng"] == {"shape": [S, 2], "dtype": "uint32", "prng_impl": "threefry2x32"}
  assert m["outputs"]["codes"] == {"shape": [S, 4, 2], "dtype": "int32"}
  assert m["versions"]["jax"] == jax.__version__ and set(m["files"]) == {"step.jaxexport", "init.jaxexport",
                                                                         "params.npz"}
  assert not any("opt" in k for k in m["params"])
  with np.load(os.path.join(artifact, "params.npz")) as d:
    assert sorted(d.files) == sorted(m["params"])


def test_bad_inputs_get_clear_errors_and_state_stays_usable(artifact):
  server = load_server(artifact)
  state = server.init_state(0)
  good = server.silent_inputs()
  on, off = np.ones(S, bool), np.zeros(S, bool)
  cases = [
      ({"audio": good["audio"][:, :-10]}, on, off, r"inputs\['audio'\]: expected shape \(3, 2560\).*received shape \(3, 2550\)"),
      ({"audio": good["audio"].astype(np.float64)}, on, off, r"expected dtype float32.*received dtype float64"),
      ({"audio": np.full_like(good["audio"], np.nan)}, on, off, r"expected finite values, received 7680 NaN"),
      ({"audio": good["audio"] + 2}, on, off, r"expected values in \[-1, 1\], received values in \[2.0, 2.0\]"),
      ({}, on, off, r"inputs: expected keys \['audio'\].*missing \['audio'\]"),
      (good, np.ones(S + 1, bool), off, r"active \(one flag per slot, 3 slots\): expected shape \(3,\).*\(4,\)"),
      (good, on, np.zeros(S, np.int32), r"reset .*expected dtype bool.*int32"),
  ]
  for inputs, active, reset, pattern in cases:
    with pytest.raises(ValueError, match=pattern):
      server.step(state, inputs, active, reset)
  state, out = server.step(state, good, on, off)   # the rejected units left the state usable
  assert out["unit"].tolist() == [0, 0, 0]
  state, out = server.step(state, good, on, off)
  assert out["unit"].tolist() == [1, 1, 1]
  other = {k: np.zeros([1] + list(v.shape[1:]), v.dtype) for k, v in state.items()}
  with pytest.raises(ValueError, match=r"state\[.*expected shape.*another artifact or config"):
    server.step(other, good, on, off)
  with pytest.raises(ValueError, match="seed"):
    server.init_state(1.5)


def test_bfloat16_params_halve_the_file_and_equal_the_rounded_weights(pool, artifact, tmp_path):
  step_fn, init_fn, params, specs = pool
  path = str(tmp_path / "bf16")
  m = write_artifact(path, step_fn=step_fn, init_fn=init_fn, params=params, num_slots=S, input_specs=specs,
                     param_dtype="bfloat16")
  assert {p["dtype"] for p in m["params"].values()} == {"bfloat16"}
  assert os.path.getsize(os.path.join(path, "params.npz")) < 0.6 * os.path.getsize(
      os.path.join(artifact, "params.npz"))
  server = load_server(path)
  audio, active, reset = _schedule(3, 2560, seed=1)
  rounded = jax.tree.map(lambda a: a.astype(jnp.bfloat16).astype(a.dtype), params)
  st, ref_st = server.init_state(0), init_fn(jnp.int32(0))
  for u in range(3):
    st, out = server.step(st, {"audio": audio[u]}, active[u], reset[u])
    ref_st, ref = jax.jit(step_fn)(rounded, ref_st, {"audio": audio[u]}, active[u], reset[u])
    np.testing.assert_allclose(out["audio"], np.asarray(ref["audio"]), atol=1e-6)


def test_export_refuses_overwrite_and_failures_leave_nothing(pool, artifact, tmp_path):
  step_fn, init_fn, params, specs = pool
  with pytest.raises(ValueError, match="already exists"):
    write_artifact(artifact, step_fn=step_fn, init_fn=init_fn, params=params, num_slots=S, input_specs=specs)
  with pytest.raises(ValueError, match="platforms"):
    write_artifact(str(tmp_path / "x"), step_fn=step_fn, init_fn=init_fn, params=params, num_slots=S,
                   input_specs=specs, platforms=("cpu", "metal"))

  def broken(*a):
    raise RuntimeError("trace failure")

  before = sorted(os.listdir(os.path.dirname(artifact)))
  with pytest.raises(RuntimeError, match="trace failure"):
    write_artifact(artifact, step_fn=broken, init_fn=init_fn, params=params, num_slots=S, input_specs=specs,
                   overwrite=True)
  assert sorted(os.listdir(os.path.dirname(artifact))) == before   # old artifact intact, no partial folder
  load_server(artifact)


def test_corrupt_or_foreign_artifacts_are_rejected(artifact, tmp_path):
  import shutil
  bad = str(tmp_path / "bad")
  shutil.copytree(artifact, bad)
  with open(os.path.join(bad, "params.npz"), "r+b") as f:
    f.seek(100)
    f.write(b"\x00\x01\x02")
  with pytest.raises(ValueError, match=r"params.npz: sha256 expected"):
    load_server(bad)
  with open(os.path.join(bad, "manifest.json")) as f:
    m = json.load(f)
  m["format_version"] = 99
  with open(os.path.join(bad, "manifest.json"), "w") as f:
    json.dump(m, f)
  with pytest.raises(ValueError, match="format_version"):
    load_server(bad)
  with pytest.raises(ValueError, match="manifest.json"):
    load_server(str(tmp_path))
