"""Attention benchmark: `python -m launch.bench --what=attention [--config=configs/small.py]`.

Block-causal attention over one packed row of 2k and 8k tokens in units of
256 tokens (8 and 32 units), heads from the config. Every ratio is measured
against a baseline in the same run:

  xla_over_dense_{n}_units      impl="xla" forward time / dense masked (reference) time
  xla_over_dpa_{n}_units        impl="xla" / jax.nn.dot_product_attention with the same mask
  visited_fraction_{n}_units    key tiles visited / all tiles (xla tiles and pallas tiles)
  xla_fwd_bwd_s_{n}_units       forward + backward time (and over dense at 2k)
On GPU/TPU additionally (bf16, impl="pallas", compiled):
  pallas_{fwd,bwd}_tflops_{n}_units          over the FLOPs of the visited tiles
  pallas_{fwd,bwd}_useful_tflops_{n}_units   over the FLOPs of visible (q, k) pairs only
  dpa_causal_{fwd,bwd}_tflops_{n}_units      jax.nn.dot_product_attention(is_causal=True), causal FLOPs
  matmul_peak_tflops                          a bf16 8192^3 matmul, and each rate's fraction of it
FLOPs: forward 4*d per (q, k) pair per head (two matmuls), backward 2.5x forward.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from wan_streamer_jax.kernels import block_causal_attention, prepare_attention, testing, visible

UNIT = 256
LENGTHS = (2048, 8192)


def _log(*a):
  print(*a, file=sys.stderr, flush=True)


def _time(fn, *args, reps=3):
  """Best wall time of `reps` runs after one compile+warm-up run (seconds)."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best


def _matmul_peak(dtype):
  n = 8192
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a, b: a @ b)
  return 2 * n ** 3 / _time(f, a, a, reps=5) / 1e12


def run(cfg) -> dict:
  m = cfg.model
  h, kvh, d = m.num_heads, m.num_kv_heads, m.head_dim
  backend = jax.default_backend()
  accel = backend in ("gpu", "tpu")
  res = {"backend": backend, "device": jax.devices()[0].device_kind, "heads": h, "kv_heads": kvh,
         "head_dim": d, "unit_tokens": UNIT}
  rng = np.random.default_rng(0)
  peak = None
  if accel:
    peak = _matmul_peak(jnp.bfloat16)
    res["matmul_peak_tflops"] = round(peak, 1)
  for length in LENGTHS:
    n = length // UNIT
    unit, seg = (jnp.asarray(x) for x in testing.uniform_layout(1, length, UNIT))
    q, k, v = (jnp.asarray(rng.normal(size=(1, length, nh, d)), jnp.float32) for nh in (h, kvh, kvh))
    mask = visible(unit, unit, seg, seg)
    visible_pairs = float(jnp.sum(mask))

    meta = prepare_attention(unit, unit, seg, seg, impl="xla")
    xla = jax.jit(lambda q, k, v, meta: block_causal_attention(
        q, k, v, q_unit=unit, kv_unit=unit, q_segment=seg, kv_segment=seg, impl="xla", metadata=meta))
    dense = jax.jit(lambda q, k, v: block_causal_attention(
        q, k, v, q_unit=unit, kv_unit=unit, q_segment=seg, kv_segment=seg, impl="reference"))
    dpa = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask[:, None]))
    reps = 3 if length <= 2048 or accel else 1
    t_xla = _time(xla, q, k, v, meta, reps=3)
    t_dense = _time(dense, q, k, v, reps=reps)
    t_dpa = _time(dpa, q, k, v, reps=reps)
    _log(f"T={length}: xla {t_xla:.4f}s dense {t_dense:.4f}s dpa(masked) {t_dpa:.4f}s")
    res[f"xla_fwd_s_{n}_units"] = round(t_xla, 5)
    res[f"dense_fwd_s_{n}_units"] = round(t_dense, 5)
    res[f"xla_over_dense_{n}_units"] = round(t_xla / t_dense, 4)
    res[f"xla_over_dpa_{n}_units"] = round(t_xla / t_dpa, 4)
    res[f"visited_fraction_{n}_units"] = round(float(meta.visited_fraction()), 4)
    res[f"xla_tiles_{n}_units"] = [meta.block_q, meta.block_k]
    loss = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(f(*a)), argnums=(0, 1, 2)))
    t_xla_g = _time(loss(xla), q, k, v, meta, reps=reps)
    res[f"xla_fwd_bwd_s_{n}_units"] = round(t_xla_g, 5)
    if length <= 2048:  # the dense backward at 8k takes minutes of CPU
      t_dense_g = _time(loss(dense), q, k, v, reps=reps)
      res[f"dense_fwd_bwd_s_{n}_units"] = round(t_dense_g, 5)
      res[f"xla_fwd_bwd_over_dense_{n}_units"] = round(t_xla_g / t_dense_g, 4)
    if not accel:
      continue

    qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
    pmeta = prepare_attention(unit, unit, seg, seg, impl="pallas")
    res[f"pallas_visited_fraction_{n}_units"] = round(float(pmeta.visited_fraction()), 4)
    res[f"pallas_tiles_{n}_units"] = [pmeta.block_q, pmeta.block_k]
    attend = lambda q, k, v, meta: block_causal_attention(
        q, k, v, q_unit=unit, kv_unit=unit, q_segment=seg, kv_segment=seg, impl="pallas", metadata=meta)
    fwd = jax.jit(attend)
    fwd_bwd = jax.jit(jax.grad(lambda q, k, v, meta: jnp.sum(attend(q, k, v, meta).astype(jnp.float32)),
                               argnums=(0, 1, 2)))
    causal = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)
    dpa_fwd = jax.jit(causal)
    dpa_fwd_bwd = jax.jit(jax.grad(lambda q, k, v: jnp.sum(causal(q, k, v).astype(jnp.float32)),
                                   argnums=(0, 1, 2)))
    t_f = _time(fwd, qb, kb, vb, pmeta, reps=10)
    t_fb = _time(fwd_bwd, qb, kb, vb, pmeta, reps=10)
    t_df = _time(dpa_fwd, qb, kb, vb, reps=10)
    t_dfb = _time(dpa_fwd_bwd, qb, kb, vb, reps=10)
    tile_pairs = float(pmeta.visited_tiles()) * pmeta.block_q * pmeta.block_k
    per_pair = 4 * d * h
    causal_pairs = length * (length + 1) / 2
    rates = {
        "pallas_fwd_tflops": tile_pairs * per_pair / t_f,
        "pallas_bwd_tflops": 2.5 * tile_pairs * per_pair / max(t_fb - t_f, 1e-9),
        "pallas_fwd_useful_tflops": visible_pairs * per_pair / t_f,
        "pallas_bwd_useful_tflops": 2.5 * visible_pairs * per_pair / max(t_fb - t_f, 1e-9),
        "dpa_causal_fwd_tflops": causal_pairs * per_pair / t_df,
        "dpa_causal_bwd_tflops": 2.5 * causal_pairs * per_pair / max(t_dfb - t_df, 1e-9),
    }
    for key, val in rates.items():
      res[f"{key}_{n}_units"] = round(val / 1e12, 2)
      res[f"{key}_{n}_units_of_peak"] = round(val / 1e12 / peak, 4)
    res[f"pallas_fwd_s_{n}_units"] = round(t_f, 6)
    res[f"pallas_fwd_bwd_s_{n}_units"] = round(t_fb, 6)
    res[f"dpa_causal_fwd_s_{n}_units"] = round(t_df, 6)
    res[f"dpa_causal_fwd_bwd_s_{n}_units"] = round(t_dfb, 6)
  return res
