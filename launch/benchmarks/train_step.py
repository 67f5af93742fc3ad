"""Train-step throughput and MFU against this machine's matmul peak, measured in the same run."""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
from absl import logging

from wan_streamer_jax import schedule
from wan_streamer_jax.config import Config
from wan_streamer_jax.model import flops
from wan_streamer_jax.parallel.mesh import make_mesh
from wan_streamer_jax.train.random_data import random_token_batch
from wan_streamer_jax.train.state import create_train_state
from wan_streamer_jax.train.feed import batch_keys
from wan_streamer_jax.train.step import batch_shardings, make_train_step
from wan_streamer_jax.train.throughput import median_seconds, peak_probe


def _setup(cfg: Config):
  mesh = make_mesh(cfg.mesh, batch_size=cfg.train.batch_size)
  ts = create_train_state(cfg, mesh)
  step = make_train_step(cfg, ts, mesh)
  shard = batch_shardings(mesh, batch_keys(cfg))
  batch = {k: jax.device_put(v, shard[k]) for k, v in random_token_batch(cfg, 0).items()}
  box = {"state": ts.state}

  def one_step():
    box["state"], m = step(box["state"], batch)
    return m

  t0 = time.perf_counter()
  jax.block_until_ready(one_step())
  return one_step, time.perf_counter() - t0


def measure_units_per_second(cfg: Config, steps: int = 3) -> float:
  """Units consumed per second by the jitted train step (global batch)."""
  one_step, _ = _setup(cfg)
  return cfg.train.batch_size * cfg.train.units_per_example / median_seconds(one_step, steps)


def run(cfg: Config, rounds: int = 5) -> dict:
  """Interleaves train steps with matmul-peak probes so that both see the same machine load.

  MFU is the median over rounds of (achieved FLOP/s / peak FLOP/s measured
  right after); the machine is shared and its load drifts.
  """
  one_step, compile_s = _setup(cfg)
  L = schedule.unit_layout(cfg).tokens_per_unit
  tokens = cfg.train.batch_size * cfg.train.units_per_example * L
  flops_per_token = flops.train_flops_per_token(cfg)
  dtype = jnp.bfloat16 if cfg.model.compute_dtype == "bfloat16" else jnp.float32
  probes = [peak_probe(dtype, 1024), peak_probe(dtype, 2048)]
  step_s, peaks, ratios = [], [], []
  for _ in range(rounds):
    t = median_seconds(one_step, 1)
    peak = max(p() for p in probes) * jax.device_count()
    step_s.append(t)
    peaks.append(peak)
    ratios.append(tokens * flops_per_token / t / peak)
  t = statistics.median(step_s)
  logging.info("steps %s, peaks %s", step_s, peaks)
  return {
      "backend": jax.default_backend(),
      "devices": jax.device_count(),
      "step_seconds": t,
      "compile_seconds": compile_s,
      "tokens_per_step": tokens,
      "tokens_per_s": tokens / t,
      "units_per_s": cfg.train.batch_size * cfg.train.units_per_example / t,
      "model_flops_per_token": flops_per_token,
      "achieved_flops_per_s": tokens * flops_per_token / t,
      "matmul_peak_flops_per_s": statistics.median(peaks),
      "mfu": statistics.median(ratios),
      "mfu_per_round": ratios,
      "attention_impl": cfg.model.attention_impl,
  }
