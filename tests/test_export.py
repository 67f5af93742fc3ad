"""Serving artifact: jax.export step + flat params + manifest, loaded in a process without the model code."""

import json
import os
import pickle
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import ROOT, tiny_config
from wan_streamer_jax.export import load_server, read_manifest, write_artifact
from wan_streamer_jax.export.specs import spec_of

S = 3


# -- the streaming engine's step ------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine():
  from wan_streamer_jax.export.checkpoints import load_engine
  return load_engine(None, cfg=tiny_config(), num_slots=S, max_units=24)[0]


@pytest.fixture(scope="module")
def artifact(engine, tmp_path_factory):
  from wan_streamer_jax.export.engine_artifact import export_engine
  path = str(tmp_path_factory.mktemp("art") / "engine")
  export_engine(engine, path, platforms=("cpu", "cuda", "tpu"))
  return path


def _schedule(engine, units, seed=0):
  """Per-unit inputs for the whole pool: tones, random frames, typed bytes, a mid-stream reset, pauses."""
  rng = np.random.default_rng(seed)
  silent = engine.silent_inputs()
  seq = []
  for u in range(units):
    x = {k: np.array(v) for k, v in silent.items()}
    x["audio"] = (0.4 * np.sin(np.arange(x["audio"].size) * (0.05 + 0.01 * u))).reshape(x["audio"].shape)
    x["audio"] = x["audio"].astype(np.float32)
    x["video"] = rng.integers(0, 256, x["video"].shape, dtype=np.uint8)
    x["camera_on"] = rng.random(S) > 0.3
    x["text"][:, 0] = np.where(rng.random(S) > 0.7, rng.integers(97, 123, S), 256)
    x["seed"] = np.array([11, 22, 33], np.int32)
    reset = np.full(S, u == 0)
    reset[1] |= u == 30                            # slot 1 starts a new conversation
    active = rng.random(S) > 0.15                  # slots pause now and then
    active |= reset
    seq.append((x, active, reset))
  return seq


_CLIENT = r"""
import pickle, sys, numpy as np
from wan_streamer_jax.export import load_server
server = load_server(sys.argv[1])
with open(sys.argv[2], "rb") as f:
  seq = pickle.load(f)
state = server.init_state(seed=7)
outs = {}
for inputs, active, reset in seq:
  state, o = server.step(state, inputs, active, reset)
  for k, v in o.items():
    outs.setdefault(k, []).append(v)
np.savez(sys.argv[3], **{k: np.stack(v) for k, v in outs.items()})
bad = sorted(m for m in sys.modules if m.startswith("wan_streamer_jax") and not
             (m in ("wan_streamer_jax", "wan_streamer_jax.checksums") or m.startswith("wan_streamer_jax.export")))
print("IMPORTED", bad, "flax" in sys.modules)
"""


def test_fresh_process_without_model_code_matches_in_process_step(engine, artifact, tmp_path):
  seq = _schedule(engine, 50)
  with open(tmp_path / "in.pkl", "wb") as f:
    pickle.dump(seq, f)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS="")
  res = subprocess.run([sys.executable, "-c", _CLIENT, artifact, str(tmp_path / "in.pkl"), str(tmp_path / "out.npz")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "IMPORTED [] False" in res.stdout, res.stdout   # neither model, codecs, engine nor flax

  state = engine.init_state(seed=7)
  got = np.load(tmp_path / "out.npz")
  for u, (inputs, active, reset) in enumerate(seq):
    state, ref = engine.step(engine.params, state, inputs, active, reset)
    for k, v in jax.device_get(ref).items():
      np.testing.assert_array_equal(got[k][u], v, err_msg=f"{k} at unit {u}")
  assert np.abs(got["audio"]).max() > 0 and got["unit"][-1].max() > 20
  assert len(np.unique(got["next_tokens"])) > 50        # sampled, not constant


def test_manifest_records_what_a_server_needs(engine, artifact):
  m = read_manifest(artifact)
  assert m["platforms"] == ["cpu", "cuda", "tpu"] and m["num_slots"] == S
  for key, want in (("sample_rate", 16000), ("samples_per_unit", 2560), ("frames_per_unit", 4), ("height", 16),
                    ("width", 16), ("text_slots", 4), ("unit_seconds", 0.16), ("fps", 25), ("cache_units", 24),
                    ("attention_impl", "xla")):
    assert m[key] == want, key
  assert m["config"]["model"] == json.loads(json.dumps(tiny_config().to_dict()["model"]))
  assert m["unit_layout"]["tokens_per_unit"] == 32
  assert m["inputs"]["audio"]["shape"] == [S, 2560] and m["inputs"]["audio"]["finite"]
  assert m["inputs"]["text"]["range"] == [0, 259] and m["inputs"]["video"]["dtype"] == "uint8"
  assert m["active"] == {"shape": [S], "dtype": "bool"}
  assert {k: v["shape"] for k, v in m["outputs"].items()} == {
      k: list(v.shape) for k, v in engine.output_spec().items()}
  assert m["versions"]["jax"] == jax.__version__ and m["sampling"]["top_k"] == 250
  assert set(m["files"]) == {"step.jaxexport", "init.jaxexport", "params.npz"}
  with np.load(os.path.join(artifact, "params.npz")) as d:
    assert sorted(d.files) == sorted(m["params"])
    n = sum(d[k].size for k in d.files)
  assert n == sum(x.size for x in jax.tree.leaves(engine.params))     # no optimizer state


def test_bad_inputs_get_clear_errors_before_anything_runs(artifact):
  server = load_server(artifact)
  state = server.init_state(0)
  good = server.silent_inputs()
  assert (good["text"] == 256).all() and set(good) == {"audio", "video", "camera_on", "text", "seed"}
  on, off = np.ones(S, bool), np.zeros(S, bool)
  bad_audio = good["audio"].copy()
  bad_audio[1, 5] = np.nan
  cases = [
      ({**good, "audio": good["audio"][:, :-10]}, on, off,
       r"inputs\['audio'\]: expected shape \(3, 2560\).*received shape \(3, 2550\)"),
      ({**good, "audio": good["audio"].astype(np.float64)}, on, off, r"expected dtype float32.*received dtype float64"),
      ({**good, "audio": bad_audio}, on, off, r"expected finite values, received 1 NaN/inf \(first at index \(1, 5\)"),
      ({**good, "video": np.zeros((S, 4, 32, 32, 3), np.uint8)}, on, off, r"inputs\['video'\]: expected shape"),
      ({**good, "text": good["text"] + 100}, on, off, r"inputs\['text'\]: expected values in \[0, 259\]"),
      ({k: v for k, v in good.items() if k != "seed"}, on, off, r"inputs: expected keys .*missing \['seed'\]"),
      (good, np.ones(S + 1, bool), off, r"active \(one flag per slot, 3 slots\): expected shape \(3,\).*\(4,\)"),
      (good, on, np.zeros(S, np.int32), r"reset .*expected dtype bool.*int32"),
  ]
  for inputs, active, reset, pattern in cases:
    with pytest.raises(ValueError, match=pattern):
      server.step(state, inputs, active, reset)
  other = {k: np.zeros([1] + list(v.shape[1:]), v.dtype) for k, v in state.items()}
  with pytest.raises(ValueError, match=r"state\[.*expected shape.*another artifact or config"):
    server.step(other, good, on, off)
  with pytest.raises(ValueError, match="seed"):
    server.init_state(1.5)
  assert server._step._cache_size() == 0            # noqa: SLF001 — nothing was compiled or run


# -- the writer and loader on a small pure step (cheap to compile) -------------------------------

SPU = 2560


def _toy_pool():
  """A pool step with the engine's shape of contract: nested state with typed PRNG keys, a counter,
  a carried accumulator, reset/active masks; params a nested dict (float32 + an int table)."""
  rng = np.random.default_rng(0)
  params = {"proj": {"w": jnp.asarray(rng.normal(0, 0.05, (SPU, 8)), jnp.float32),
                     "b": jnp.asarray(rng.normal(0, 1, (8,)), jnp.float32)},
            "table": jnp.arange(8, dtype=jnp.int32)}

  def init_fn(seed):
    return {"acc": jnp.zeros((S, 8), jnp.float32), "unit": jnp.zeros((S,), jnp.int32),
            "rng": jax.random.split(jax.random.key(seed), S)}

  def step_fn(p, state, inputs, active, reset):
    sel = lambda m, a, b: jnp.where(m.reshape(m.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
    state = jax.tree.map(lambda f, s: sel(reset, f, s), init_fn(0), state)
    y = jnp.tanh(inputs["audio"] @ p["proj"]["w"] + p["proj"]["b"])
    acc = 0.9 * state["acc"] + y
    noise = jax.vmap(lambda k: jax.random.uniform(k, ()))(state["rng"])
    new = {"acc": acc, "unit": state["unit"] + 1, "rng": jax.vmap(lambda k: jax.random.split(k)[0])(state["rng"])}
    new = jax.tree.map(lambda n, o: sel(active, n, o), new, state)
    code = p["table"][jnp.argmax(acc, axis=1)]
    return new, {"acc": acc * active[:, None], "code": code, "unit": state["unit"], "noise": noise}

  specs = {"audio": spec_of(jax.ShapeDtypeStruct((S, SPU), jnp.float32), range=[-1, 1])}
  return step_fn, init_fn, params, specs


@pytest.fixture(scope="module")
def pool():
  step_fn, init_fn, params, specs = _toy_pool()
  return jax.jit(step_fn), init_fn, params, specs    # one compiled reference for every test below


@pytest.fixture(scope="module")
def toy_artifact(pool, tmp_path_factory):
  step_fn, init_fn, params, specs = pool
  path = str(tmp_path_factory.mktemp("art") / "toy_pool")
  write_artifact(path, step_fn=step_fn, init_fn=init_fn, params=params, num_slots=S, input_specs=specs)
  return path


def test_typed_prng_keys_ranges_and_state_usable_after_rejection(pool, toy_artifact):
  m = read_manifest(toy_artifact)
  assert m["state"]["rng"] == {"shape": [S, 2], "dtype": "uint32", "prng_impl": "threefry2x32"}
  assert m["inputs"]["audio"]["range"] == [-1, 1]
  server = load_server(toy_artifact)
  state = server.init_state(4)
  x = {"audio": np.full((S, SPU), 0.5, np.float32)}
  with pytest.raises(ValueError, match=r"expected values in \[-1, 1\], received values in \[1.5, 1.5\]"):
    server.step(state, {"audio": x["audio"] + 1})
  step_fn, init_fn, params, _ = pool
  ref_state = init_fn(jnp.int32(4))
  with pytest.raises(ValueError, match=r"expected shape \(3, 2560\)"):
    server.step(state, {"audio": x["audio"][:2]})
  for _ in range(3):                                # the rejected units left the state usable
    state, out = server.step(state, x)
    ref_state, ref = step_fn(params, ref_state, x, np.ones(S, bool), np.zeros(S, bool))
    for k in ("noise", "acc", "code", "unit"):
      np.testing.assert_array_equal(out[k], np.asarray(ref[k]), err_msg=k)


def test_bfloat16_params_halve_the_file_and_equal_the_rounded_weights(pool, toy_artifact, tmp_path):
  step_fn, init_fn, params, specs = pool
  path = str(tmp_path / "bf16")
  m = write_artifact(path, step_fn=step_fn, init_fn=init_fn, params=params, num_slots=S, input_specs=specs,
                     param_dtype="bfloat16")
  assert {n: p["dtype"] for n, p in m["params"].items()} == {"proj/w": "bfloat16", "proj/b": "bfloat16",
                                                              "table": "int32"}   # only floats are cast
  assert os.path.getsize(os.path.join(path, "params.npz")) < 0.6 * os.path.getsize(
      os.path.join(toy_artifact, "params.npz"))
  server = load_server(path)
  rng = np.random.default_rng(1)
  audio = rng.uniform(-0.5, 0.5, (3, S, SPU)).astype(np.float32)
  active, reset = rng.random((3, S)) > 0.2, np.eye(3, S, dtype=bool)
  rounded = jax.tree.map(lambda a: a.astype(jnp.bfloat16).astype(a.dtype) if a.dtype == jnp.float32 else a, params)
  st, ref_st, f32_st = server.init_state(0), init_fn(jnp.int32(0)), init_fn(jnp.int32(0))
  gap = 0.0
  for u in range(3):
    st, out = server.step(st, {"audio": audio[u]}, active[u], reset[u])
    ref_st, ref = step_fn(rounded, ref_st, {"audio": audio[u]}, active[u], reset[u])
    f32_st, f32 = step_fn(params, f32_st, {"audio": audio[u]}, active[u], reset[u])
    np.testing.assert_allclose(out["acc"], np.asarray(ref["acc"]), atol=1e-5)
    gap = max(gap, float(np.abs(out["acc"] - np.asarray(f32["acc"])).max()))
  assert gap > 1e-4            # the stored weights really are bfloat16 (not the float32 ones)


def test_export_refuses_overwrite_and_failures_leave_nothing(pool, toy_artifact, tmp_path):
  step_fn, init_fn, params, specs = pool
  with pytest.raises(ValueError, match="already exists"):
    write_artifact(toy_artifact, step_fn=step_fn, init_fn=init_fn, params=params, num_slots=S, input_specs=specs)
  with pytest.raises(ValueError, match="platforms"):
    write_artifact(str(tmp_path / "x"), step_fn=step_fn, init_fn=init_fn, params=params, num_slots=S,
                   input_specs=specs, platforms=("cpu", "metal"))

  def broken(*a):
    raise RuntimeError("trace failure")

  before = sorted(os.listdir(os.path.dirname(toy_artifact)))
  with pytest.raises(RuntimeError, match="trace failure"):
    write_artifact(toy_artifact, step_fn=broken, init_fn=init_fn, params=params, num_slots=S, input_specs=specs,
                   overwrite=True)
  assert sorted(os.listdir(os.path.dirname(toy_artifact))) == before   # old one intact, no partial folder
  load_server(toy_artifact)


def test_corrupt_or_foreign_artifacts_are_rejected(toy_artifact, tmp_path):
  bad = str(tmp_path / "bad")
  shutil.copytree(toy_artifact, bad)
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
