"""Two processes on loopback (gloo, 2 fake CPU devices each) resume a one-process (4-device) checkpoint
and continue exactly as the one-process run does."""

import json
import subprocess
import sys

import numpy as np
import portpicker

from tests.helpers import ROOT, launcher_env

_ARGS = ["--config=tiny", "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.train.log_every=1",
         "--config.train.batch_size=4", "--config.model.attention_impl=xla", "--config.optimizer.warmup_steps=1",
         "--progress=false"]


def _losses(path):
  with open(path) as f:
    return {h["step"]: (h["loss"], h["grad_norm"]) for h in json.load(f)}


def test_two_processes_resume_a_one_process_checkpoint(tmp_path):
  cmd = [sys.executable, "-m", "launch.train", *_ARGS]
  first = subprocess.run(cmd + ["--config.train.num_steps=2", f"--workdir={tmp_path}/run"], cwd=ROOT,
                         env=launcher_env(4, str(tmp_path / "cache")), capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  port = portpicker.pick_unused_port()
  procs = []
  for pid in range(2):
    procs.append(subprocess.Popen(
        cmd + ["--config.train.num_steps=4", f"--workdir={tmp_path}/run", f"--coordinator_address=127.0.0.1:{port}",
               "--num_processes=2", f"--process_id={pid}", f"--metrics_out={tmp_path}/p{pid}.json"],
        cwd=ROOT, env=launcher_env(2, str(tmp_path / "cache")), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True))
  single = subprocess.run(cmd + ["--config.train.num_steps=4", f"--metrics_out={tmp_path}/single.json"], cwd=ROOT,
                          env=launcher_env(4, str(tmp_path / "cache")), capture_output=True, text=True, timeout=600)
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert single.returncode == 0, single.stderr[-3000:]
  assert "2 processes" in outs[0] and "resumed from step 2" in outs[0], outs[0][-2000:]
  one = _losses(tmp_path / "single.json")
  for name in ("p0.json", "p1.json"):
    multi = _losses(tmp_path / name)
    assert sorted(multi) == [2, 3]
    np.testing.assert_allclose([multi[s] for s in (2, 3)], [one[s] for s in (2, 3)], rtol=1e-5)
