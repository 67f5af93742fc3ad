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
from wan_streamer_jax.train.step import batch_shardings, make_train_step


def _median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def matmul_peak_flops(dtype=jnp.float32, n: int = 2048, repeats: int = 5) -> float:
  """Achievable dense matmul FLOP/s of the default device (best of a few square sizes)."""
  best = 0.0
  for size in (n // 2, n):
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    f = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(f(a, b))
    best = max(best, 2 * size ** 3 / _median_seconds(lambda: f(a, b), repeats))
  return best


def _timed_steps(cfg: Config, steps: int):
  mesh = make_mesh(cfg.mesh)
  ts = create_train_state(cfg, mesh)
  step = make_train_step(cfg, ts, mesh)
  shard = batch_shardings(mesh)
  batch = {k: jax.device_put(v, shard[k]) for k, v in random_token_batch(cfg, 0).items()}
  state = ts.state
  t0 = time.perf_counter()
  state, m = step(state, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return compile_s, statistics.median(times)


def measure_units_per_second(cfg: Config, steps: int = 3) -> float:
  """Units consumed per second by the jitted train step (global batch)."""
  _, t = _timed_steps(cfg, steps)
  return cfg.train.batch_size * cfg.train.units_per_example / t


def run(cfg: Config) -> dict:
  steps = 5
  compile_s, step_s = _timed_steps(cfg, steps)
  L = schedule.unit_layout(cfg).tokens_per_unit
  tokens = cfg.train.batch_size * cfg.train.units_per_example * L
  flops_per_token = flops.train_flops_per_token(cfg)
  achieved = tokens * flops_per_token / step_s
  dtype = jnp.bfloat16 if cfg.model.compute_dtype == "bfloat16" else jnp.float32
  peak = matmul_peak_flops(dtype) * jax.device_count()
  logging.info("step %.3fs, %.3g FLOP/s, peak %.3g", step_s, achieved, peak)
  return {
      "backend": jax.default_backend(),
      "devices": jax.device_count(),
      "step_seconds": step_s,
      "compile_seconds": compile_s,
      "tokens_per_step": tokens,
      "tokens_per_s": tokens / step_s,
      "units_per_s": cfg.train.batch_size * cfg.train.units_per_example / step_s,
      "model_flops_per_token": flops_per_token,
      "achieved_flops_per_s": achieved,
      "matmul_peak_flops_per_s": peak,
      "mfu": achieved / peak,
      "attention_impl": cfg.model.attention_impl,
  }
