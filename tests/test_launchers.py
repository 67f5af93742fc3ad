"""Launchers end to end: describe for a pod-scale config, the train-step benchmark JSON, the train launcher's
losses on 8 devices from any directory, one-line config errors."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, launcher_env, read_metrics


def _run(args, devices=1, cwd=ROOT, ok=True):
  out = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=launcher_env(devices), capture_output=True,
                       text=True, timeout=600)
  if ok:
    assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_describe_large_config_without_allocating():
  out = _run(["launch.describe", "--config=configs/large_7b.py"]).stdout
  d = json.loads(out.strip().splitlines()[-1])
  assert d["tokens_per_unit_by_group"] == {"video_in": 256, "audio_in": 32, "text_in": 16,
                                           "video_out": 256, "audio_out": 32, "text_out": 16}
  assert 6e9 < d["parameters"] < 1e10 and d["parameters"] == d["parameters_analytic"]
  assert d["kv_cache_bytes_per_unit"] == 32 * 2 * 8 * 128 * 608 * 2
  assert d["kv_cache_bytes_per_minute"] == d["kv_cache_bytes_per_unit"] * 375


def test_train_step_bench_prints_one_json_object_on_8_devices():
  out = _run(["launch.bench", "--what=train_step", "--config=tiny"], devices=8).stdout
  lines = [l for l in out.strip().splitlines() if l.strip()]
  assert len(lines) == 1
  d = json.loads(lines[0])
  for key in ("tokens_per_s", "model_flops_per_token", "achieved_flops_per_s", "matmul_peak_flops_per_s", "mfu"):
    assert d[key] > 0, key
  assert 0 < d["mfu"] < 1 and d["devices"] == 8


def test_train_launcher_on_8_devices_from_anywhere_has_finite_falling_losses(tmp_path):
  # the shipped config by name, from a directory that is not the repository; the default mesh on 8 devices
  out = _run(["launch.train", "--config=tiny", "--data=grain", "--config.train.num_steps=10",
              "--config.train.log_every=1", "--config.optimizer.warmup_steps=2", "--progress=false",
              f"--workdir={tmp_path}/run"], devices=8, cwd=tmp_path)
  assert "mesh {'data': 4, 'fsdp': 1, 'tensor': 2}" in out.stdout
  records = read_metrics(tmp_path / "run")
  losses = np.array([records[s]["loss"] for s in range(10)])
  assert np.isfinite(losses).all(), losses
  assert losses[-3:].mean() < losses[:3].mean() - 0.2, losses
  assert all(0 < records[s]["mfu"] < 1 for s in range(1, 10))  # MFU against the measured matmul peak
  assert glob.glob(str(tmp_path / "run" / "tb" / "events.out.tfevents.*"))
  assert os.path.isdir(tmp_path / "run" / "checkpoints" / "10")
  noise = [l for l in out.stderr.splitlines() if "libtpu" in l or "checkpoint_manager" in l]
  assert not noise, noise[:3]


@pytest.mark.parametrize("args, message", [
    (["--config.model.num_kv_heads=3"], "error: config field `model.num_heads`: expected a multiple of "
                                        "model.num_kv_heads=3, got 4"),
    (["--config.mesh.data=-1", "--config.mesh.tensor=2", "--config.train.batch_size=6"],
     "error: config field `train.batch_size`: expected a multiple of mesh data*fsdp = 4*1 = 4"),
    (["--config=no_such_config"], "error: config 'no_such_config': expected a config file or the name of a "
                                  "shipped config"),
])
def test_config_errors_are_one_line(args, message):
  out = _run(["launch.train", "--config=tiny", *args], devices=8, ok=False)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(message), out.stderr[-2000:]


def test_every_benchmark_module_imports_and_has_run():
  """`launch.bench --what=X` imports launch/benchmarks/X.py lazily: a broken import (e.g. a renamed helper)
  would only show when someone runs that benchmark. In a subprocess: importing launch.bench here would
  define its absl flags in the test process (other tests import launchers that define `--config` too)."""
  import subprocess
  import sys
  code = ("import importlib, inspect\n"
          "from launch.bench import WHATS\n"
          "for what in WHATS:\n"
          "  run = getattr(importlib.import_module(f'launch.benchmarks.{what}'), 'run', None)\n"
          "  assert callable(run) and 'cfg' in inspect.signature(run).parameters, what\n"
          "print(len(WHATS))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert int(out.stdout.split()[-1]) >= 7
