"""A training run killed with SIGTERM saves, and the restarted run continues exactly."""

import json
import os
import signal
import subprocess
import sys

import numpy as np

from tests.helpers import ROOT

_BASE = [sys.executable, "-m", "launch.train", "--config=configs/tiny.py", "--data=grain",
         "--config.train.log_every=1", "--config.optimizer.warmup_steps=2"]


def _env():
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
              PYTHONUNBUFFERED="1")


def _run(args, tmp_path, name):
  out = subprocess.run(_BASE + args + [f"--metrics_out={tmp_path}/{name}.json"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / f"{name}.json") as f:
    return {h["step"]: h["loss"] for h in json.load(f)}, out.stdout


def test_sigterm_saves_and_resume_continues_exactly(tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(_BASE + ["--config.train.num_steps=100000", f"--workdir={workdir}"], cwd=ROOT,
                          env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  for line in proc.stdout:
    if line.startswith("step     2"):
      proc.send_signal(signal.SIGTERM)
      break
  rest = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0
  saved = int(rest.split("SIGTERM: saved step ")[1].split(",")[0])
  assert saved >= 3 and os.path.isdir(workdir / "checkpoints" / str(saved))

  total = saved + 3
  resumed, out = _run([f"--config.train.num_steps={total}", f"--workdir={workdir}"], tmp_path, "resumed")
  assert f"resumed from step {saved}" in out
  straight, _ = _run([f"--config.train.num_steps={total}"], tmp_path, "straight")
  assert sorted(resumed) == [saved, saved + 1, saved + 2]
  np.testing.assert_allclose([resumed[s] for s in sorted(resumed)],
                             [straight[s] for s in sorted(resumed)], rtol=1e-6)
