"""launch.stream and launch.export on a tiny random-init training checkpoint: every output, well-formed."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from scipy.io import wavfile

from data_pipelines import media_io
from tests.helpers import ROOT, tiny_config

UNITS = 25


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A launch.train-style run directory holding one step of a random-init tiny model (+ optimizer)."""
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train.checkpoint import Checkpointer, run_meta
  from wan_streamer_jax.train.state import create_train_state
  from wan_streamer_jax.train.transformer_task import split_state
  cfg = tiny_config()
  ts = create_train_state(cfg, make_mesh(cfg.mesh, jax.devices()[:1]), seed=5)
  run = tmp_path_factory.mktemp("run")
  ckpt = Checkpointer(str(run / "checkpoints"), async_save=False)
  ckpt.save(3, *split_state(ts.state), run_meta("transformer", cfg))
  ckpt.close()
  model, _ = nnx.merge(ts.graphdef, ts.state)
  return str(run), model


def _run(args):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_stream_launcher_writes_every_output_well_formed(checkpoint, tmp_path):
  run_dir, _ = checkpoint
  cfg = tiny_config()
  spu = cfg.audio.samples_per_unit
  report, stderr = _run(["launch.stream", f"--checkpoint={run_dir}", "--input=validation:1",
                         f"--max_units={UNITS}", "--norealtime", f"--out_dir={tmp_path}", "--seed=3"])
  assert f"{UNITS}/{UNITS}" in stderr                                       # tqdm progress
  assert report["sources"]["model"]["step"] == 3 and report["units"] == UNITS
  assert 0 < report["step_ms_p50"] <= report["step_ms_p99"] and report["real_time_factor"] > 0
  np.testing.assert_allclose(report["latency_ms_p50"], 160 + report["step_ms_p50"])
  files = report["files"]
  assert sorted(files) == ["latency_png", "mp4", "report", "transcript", "transcript_text", "wav"]

  rate, pcm = wavfile.read(files["wav"])
  assert rate == 16000 and pcm.shape == (UNITS * spu, 2)
  from wan_streamer_jax.streaming.recording import synthetic_recording
  user = synthetic_recording(cfg, "validation", 1).truncated(UNITS)
  np.testing.assert_allclose(pcm[:, 0] / 32767, user.audio, atol=2e-4)      # user on the left
  assert np.abs(pcm[:, 1]).max() > 0                                        # the model's voice on the right

  frames = media_io.read_video(files["mp4"], 128, 256)
  assert frames.shape == (UNITS * 4, 128, 256, 3)

  t = json.load(open(files["transcript"]))
  assert t["units"] == UNITS and t["unit_seconds"] == 0.16
  for e in t["entries"]:
    assert 0 <= e["unit"] < UNITS and e["end_s"] == pytest.approx(e["start_s"] + 0.16)
    assert len(e["model_tokens"]) == cfg.text.text_slots
  assert open(files["latency_png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  saved = json.load(open(files["report"]))
  assert saved["latency"]["step_ms_p99"] == report["step_ms_p99"]


def test_export_launcher_writes_the_checkpoint_weights(checkpoint, tmp_path):
  run_dir, model = checkpoint
  out = tmp_path / "art"
  summary, _ = _run(["launch.export", f"--checkpoint={run_dir}", f"--out={out}", "--platforms=cpu,cuda",
                     "--slots=2", "--cache_units=16"])
  assert summary["platforms"] == ["cpu", "cuda"] and summary["num_slots"] == 2
  m = json.load(open(out / "manifest.json"))
  assert m["cache_units"] == 16 and m["sources"]["model"]["step"] == 3
  with np.load(out / "params.npz") as d:
    emb = d["model/embed/audio"]
    np.testing.assert_array_equal(emb, np.asarray(model.embed["audio"][...]))   # trained weights, not a fresh init
    assert not any(k.startswith("opt") or "/mu/" in k for k in d.files)


def test_serve_checkpoint_path_serves_the_checkpoint_as_the_engine_streams_it(checkpoint, tmp_path):
  """`launch.serve --checkpoint`: the run exported on the fly and loaded as a Server gives, unit for unit,
  what the engine over the same checkpoint gives (same seeds)."""
  from wan_streamer_jax.export.checkpoints import load_engine
  from wan_streamer_jax.export.engine_artifact import serve_engine
  from wan_streamer_jax.streaming.driver import drive_recording
  from wan_streamer_jax.streaming.recording import synthetic_recording
  run_dir, _ = checkpoint
  engine, sources = load_engine(run_dir, num_slots=2, attention_impl="xla", max_units=16)  # tiny: no window
  server, path = serve_engine(engine, str(tmp_path / "art"), metadata={"sources": sources})
  assert json.load(open(os.path.join(path, "manifest.json")))["sources"]["model"]["step"] == 3
  rec = synthetic_recording(engine.cfg, "test", 0).truncated(12)

  def drive(step, params, state, silent):
    _, recorder, _ = drive_recording(step, params, state, rec, silent_inputs=silent, slot=1, seed=4, realtime=False)
    return recorder

  served = drive(lambda p, s, i, a, r: server.step(s, i, a, r), None, server.init_state(0), server.silent_inputs())
  direct = drive(engine.step, engine.params, engine.init_state(seed=0), engine.silent_inputs())
  np.testing.assert_array_equal(np.stack(served.text), np.stack(direct.text))
  np.testing.assert_array_equal(served.turn, direct.turn)
  np.testing.assert_allclose(np.stack(served.audio), np.stack(direct.audio), atol=1e-5)
  assert np.abs(np.stack(served.video).astype(int) - np.stack(direct.video).astype(int)).max() <= 1


def test_an_engine_over_restored_weights_compiles_its_step_once(checkpoint):
  """Weights restored onto a training mesh (NamedSharding) and `init_state()` share one sharding: the first
  real unit after the warm-up does not recompile the step (it did: 15 s on the documented demo's first unit)."""
  from wan_streamer_jax.config import MeshConfig
  from wan_streamer_jax.export.checkpoints import load_codecs
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.streaming import StreamingEngine
  from wan_streamer_jax.streaming.driver import drive_recording
  from wan_streamer_jax.streaming.recording import synthetic_recording
  from wan_streamer_jax.train.checkpoint import load_model
  run_dir, _ = checkpoint
  model, cfg, _, _ = load_model(run_dir, "transformer", mesh=make_mesh(MeshConfig(data=1, fsdp=1, tensor=1),
                                                                       devices=jax.devices()[:1]))
  audio, video, _ = load_codecs(cfg)
  engine = StreamingEngine(cfg, model, audio, video, num_slots=1, max_units=8)
  rec = synthetic_recording(cfg, "test", 0).truncated(3)
  report, _, _ = drive_recording(engine.step, engine.params, engine.init_state(seed=0), rec,
                                 silent_inputs=engine.silent_inputs(), realtime=False)
  assert engine.compiled_step._cache_size() == 1
  assert report.summary()["deadline_misses"] == 0
