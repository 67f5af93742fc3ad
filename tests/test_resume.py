"""Runs survive anything: Ctrl-C saves, kill -9 at a random step and a restart == the uninterrupted run.

Both for the Transformer (Grain token pipeline: data order included) and for a
codec (Grain raw-window pipeline), the parameters after N steps are
bit-identical to those of an uninterrupted run with the same seed.
"""

import os
import random
import signal
import subprocess
import sys

import numpy as np
import jax
import pytest

from tests.helpers import launcher_env, read_metrics
from wan_streamer_jax.train.checkpoint import load_params

_TRANSFORMER = [sys.executable, "-m", "launch.train", "--config=tiny", "--data=grain", "--progress=false",
                "--config.model.num_layers=1", "--config.train.log_every=1", "--config.train.num_steps=8",
                "--config.train.checkpoint_every=2", "--config.optimizer.warmup_steps=2"]
_CODEC = [sys.executable, "-m", "launch.train_codec", "--config=codec_audio_tiny", "--data=synthetic",
          "--progress=false", "--config.train.num_steps=6", "--config.train.checkpoint_every=2",
          "--config.codec_train.eval_windows=8", "--config.codec_train.eval_units=4"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


def _run(cmd, workdir, cwd, cache):
  out = subprocess.run(cmd + [f"--workdir={workdir}"], cwd=cwd, env=launcher_env(1, cache), capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _interrupt(cmd, workdir, cwd, cache, at_step: int, sig) -> str:
  """Starts `cmd`, sends `sig` once step `at_step` was logged; returns the output after it."""
  proc = subprocess.Popen(cmd + [f"--workdir={workdir}"], cwd=cwd, env=launcher_env(1, cache),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if line.startswith("step") and int(line.split()[1]) >= at_step:
      proc.send_signal(sig)
      break
  rest = proc.communicate(timeout=600)[0]
  want = -signal.SIGKILL if sig == signal.SIGKILL else 0
  assert proc.returncode == want, "".join(seen)[-2000:] + rest[-3000:]
  return rest


def _assert_bit_identical(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) and la
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_transformer_ctrl_c_and_kill_9_then_restart_equal_the_uninterrupted_run(tmp_path, cache):
  rng = random.Random()
  straight = _run(_TRANSFORMER, tmp_path / "straight", tmp_path, cache)
  assert "checkpoint_manager" not in straight.stderr  # Orbax INFO lines are not shown by default
  # Ctrl-C saves like SIGTERM (step k+1 is on disk), then the run exits cleanly.
  k = rng.randint(0, 2)
  rest = _interrupt(_TRANSFORMER, tmp_path / "run", tmp_path, cache, k, signal.SIGINT)
  saved = int(rest.split("SIGINT: saved step ")[1].split(",")[0])
  assert saved > k and os.path.isdir(tmp_path / "run" / "checkpoints" / str(saved)), rest
  # kill -9 at a random later step (possibly during an async save), then the same command again.
  k9 = rng.randint(saved + 1, 6)
  _interrupt(_TRANSFORMER, tmp_path / "run", tmp_path, cache, k9, signal.SIGKILL)
  resumed = _run(_TRANSFORMER, tmp_path / "run", tmp_path, cache)
  assert "resumed from step" in resumed.stdout, (k, k9, resumed.stdout)
  p_straight, *_ = load_params(str(tmp_path / "straight"))
  p_run, *_ = load_params(str(tmp_path / "run"))
  _assert_bit_identical(p_run, p_straight)
  a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "run")
  assert [a[s]["loss"] for s in range(8)] == [b[s]["loss"] for s in range(8)], (k, k9)


@pytest.mark.slow
def test_codec_kill_9_then_restart_equals_the_uninterrupted_run(tmp_path, cache):
  straight = _run(_CODEC, tmp_path / "straight", tmp_path, cache)
  losses = [r["loss"] for _, r in sorted(read_metrics(tmp_path / "straight").items())]
  assert len(losses) == 6 and np.isfinite(losses).all() and min(losses[-2:]) < losses[0], losses
  assert os.path.exists(tmp_path / "straight" / "eval.json"), straight.stdout
  k9 = random.Random().randint(1, 4)
  _interrupt(_CODEC, tmp_path / "run", tmp_path, cache, k9, signal.SIGKILL)
  _run(_CODEC, tmp_path / "run", tmp_path, cache)
  p_straight, _, kind, step = load_params(str(tmp_path / "straight"))
  p_run, *_ = load_params(str(tmp_path / "run"), "audio")
  assert (kind, step) == ("audio", 6)
  _assert_bit_identical(p_run, p_straight)
