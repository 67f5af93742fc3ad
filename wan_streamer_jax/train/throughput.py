"""This machine's achievable matmul FLOP/s: the denominator of MFU (measured, not a datasheet)."""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()` (blocked until its outputs are ready) over `repeats` calls."""
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def peak_probe(dtype, n: int):
  """Compiles an `[n, n] @ [n, n]` matmul on the default device; returns `() -> FLOP/s` (median of 3)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  jax.block_until_ready(f(a, b))
  return lambda: 2 * n ** 3 / median_seconds(lambda: f(a, b), 3)


def matmul_peak_flops(dtype=jnp.float32, n: int = 2048) -> float:
  """Achievable dense matmul FLOP/s of one device (best of two square sizes)."""
  return max(peak_probe(dtype, n // 2)(), peak_probe(dtype, n)())
