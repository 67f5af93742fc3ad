"""Two processes on loopback (gloo, 2 fake CPU devices each) == one process with 4 devices."""

import json
import os
import subprocess
import sys

import numpy as np
import portpicker

from tests.helpers import ROOT

_ARGS = ["--config=configs/tiny.py", "--config.mesh.data=2", "--config.mesh.fsdp=2",
         "--config.train.num_steps=3", "--config.train.log_every=1", "--config.train.batch_size=4",
         "--config.model.attention_impl=xla", "--config.optimizer.warmup_steps=1"]


def _env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _losses(path):
  with open(path) as f:
    return [(h["loss"], h["grad_norm"]) for h in json.load(f)]


def test_two_processes_match_one_process(tmp_path):
  port = portpicker.pick_unused_port()
  procs = []
  for pid in range(2):
    cmd = [sys.executable, "-m", "launch.train", *_ARGS, f"--coordinator_address=127.0.0.1:{port}",
           "--num_processes=2", f"--process_id={pid}", f"--metrics_out={tmp_path}/p{pid}.json"]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  single = subprocess.run([sys.executable, "-m", "launch.train", *_ARGS,
                           f"--metrics_out={tmp_path}/single.json"], cwd=ROOT, env=_env(4),
                          capture_output=True, text=True, timeout=600)
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert single.returncode == 0, single.stderr[-3000:]
  assert "2 processes" in outs[0]
  multi0, multi1, one = (_losses(tmp_path / n) for n in ("p0.json", "p1.json", "single.json"))
  assert len(one) == 3
  np.testing.assert_allclose(multi0, one, rtol=1e-5)
  np.testing.assert_allclose(multi1, one, rtol=1e-5)
