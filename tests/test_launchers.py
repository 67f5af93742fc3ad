"""Launchers run end to end: describe for a pod-scale config, the train-step benchmark JSON."""

import json
import os
import subprocess
import sys

from tests.helpers import ROOT


def _run(args, devices=1):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_describe_large_config_without_allocating():
  out = _run(["launch.describe", "--config=configs/large_7b.py"])
  d = json.loads(out.strip().splitlines()[-1])
  assert d["tokens_per_unit_by_group"] == {"video_in": 256, "audio_in": 32, "text_in": 16,
                                           "video_out": 256, "audio_out": 32, "text_out": 16}
  assert 6e9 < d["parameters"] < 1e10 and d["parameters"] == d["parameters_analytic"]
  assert d["kv_cache_bytes_per_unit"] == 32 * 2 * 8 * 128 * 608 * 2
  assert d["kv_cache_bytes_per_minute"] == d["kv_cache_bytes_per_unit"] * 375


def test_train_step_bench_prints_one_json_object():
  out = _run(["launch.bench", "--what=train_step", "--config=configs/tiny.py"])
  lines = [l for l in out.strip().splitlines() if l.strip()]
  assert len(lines) == 1
  d = json.loads(lines[0])
  for key in ("tokens_per_s", "model_flops_per_token", "achieved_flops_per_s", "matmul_peak_flops_per_s", "mfu"):
    assert d[key] > 0, key
  assert 0 < d["mfu"] < 1


def test_train_launcher_prints_losses():
  out = _run(["launch.train", "--config=configs/tiny.py", "--config.train.num_steps=3",
              "--config.train.log_every=1"])
  assert out.count("loss") >= 3
