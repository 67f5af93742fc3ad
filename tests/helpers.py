"""Shared test helpers: tiny configs and random batches in the unit layout."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from wan_streamer_jax import schedule
from wan_streamer_jax.config import Config, load_config
from wan_streamer_jax.train.random_data import random_token_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides) -> Config:
  return load_config(os.path.join(ROOT, "configs", "tiny.py"), overrides)


def random_batch(cfg: Config, batch: int, units: int, seed: int = 0, packed: bool = False) -> dict:
  """Random in-vocabulary tokens `[batch, units * L]`; optionally 2 packed segments + padding."""
  base = random_token_batch(cfg.replace(train=dict(seed=seed)), 0, batch, units)
  tokens, seg, unit_ids = base["tokens"], base["segment_ids"].copy(), base["unit_ids"].copy()
  rng = np.random.default_rng(seed)
  layout = schedule.unit_layout(cfg)
  if packed:
    L = layout.tokens_per_unit
    for b in range(batch):
      cut = int(rng.integers(1, units - 1))
      end = int(rng.integers(cut + 1, units + 1))
      seg[b, cut * L:] = 2
      unit_ids[b, cut * L:] -= cut
      seg[b, end * L:] = 0
      unit_ids[b, end * L:] = 0
  return {"tokens": jnp.asarray(tokens), "segment_ids": jnp.asarray(seg), "unit_ids": jnp.asarray(unit_ids)}


def launcher_env(devices: int = 1, cache_dir: str | None = None) -> dict:
  """Environment of a launcher subprocess: CPU, `devices` fake devices, the repo importable from any cwd.

  `cache_dir`: JAX's persistent compilation cache, so restarted processes skip recompiling.
  """
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             PYTHONUNBUFFERED="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if cache_dir:
    env.update(JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def read_metrics(workdir, split: str = "train") -> dict:
  """`workdir/metrics.jsonl` -> {step: record} of one split (the last record of a step wins)."""
  import json
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if rec.get("split") == split:
        out[rec["step"]] = rec
  return out


def train_losses(cfg: Config, batch: dict, runs: int = 1, steps: int = 2) -> tuple[list, dict]:
  """Losses of `steps` train steps from the same fresh state (one device), `runs` times with one compiled
  step, and the last step's metrics."""
  import jax
  from wan_streamer_jax.config import MeshConfig
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train.state import create_train_state
  from wan_streamer_jax.train.step import make_train_step
  mesh = make_mesh(MeshConfig(), jax.devices()[:1])
  step, out, metrics = None, [], {}
  for _ in range(runs):
    ts = create_train_state(cfg, mesh, seed=0)
    step, state, losses = step or make_train_step(cfg, ts, mesh), ts.state, []
    for _ in range(steps):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    out.append(losses)
  return out, metrics
