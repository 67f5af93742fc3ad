"""Codec streaming speed: `python -m launch.bench --what=codecs --config=configs/small.py`.

One stream (batch 1), the jitted pure streaming step (`CodecFns.encode_step` /
`decode_step`) called once per 160 ms unit with the state carried, each unit
waited for (`block_until_ready`) as a real-time driver would. Figures:

  {audio,video}_{encode,decode}_x_realtime   160 ms / mean wall time per unit step
  ..._ms_p50 / _ms_p95                        per-unit latency (ms)
  ..._compile_s                               first call (trace + compile)

Weights are random (speed does not depend on them). Set `units` via
`run(cfg, units=...)`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wan_streamer_jax.codecs import AudioCodec, VideoCodec
from wan_streamer_jax.config import UNIT_SECONDS, Config


def _time_steps(step, params, state, inputs) -> tuple[float, list[float]]:
  t0 = time.perf_counter()
  state, out = step(params, state, inputs[0])
  jax.block_until_ready(out)
  compile_s = time.perf_counter() - t0
  times = []
  for x in inputs[1:]:
    t0 = time.perf_counter()
    state, out = step(params, state, x)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  return compile_s, times


def _figures(prefix: str, compile_s: float, times: list[float]) -> dict:
  t = np.asarray(times)
  return {f"{prefix}_x_realtime": round(float(UNIT_SECONDS / t.mean()), 2),
          f"{prefix}_ms_p50": round(float(np.percentile(t, 50) * 1e3), 3),
          f"{prefix}_ms_p95": round(float(np.percentile(t, 95) * 1e3), 3),
          f"{prefix}_compile_s": round(compile_s, 2)}


def _bench_codec(name: str, codec, units: int, unit_input, unit_codes) -> dict:
  fns, params = codec.functional()
  enc = jax.jit(fns.encode_step)
  dec = jax.jit(fns.decode_step)
  out = {}
  c, t = _time_steps(enc, params, fns.init_state(1), unit_input)
  out.update(_figures(f"{name}_encode", c, t))
  c, t = _time_steps(dec, params, fns.init_state(1), unit_codes)
  out.update(_figures(f"{name}_decode", c, t))
  out[f"{name}_params"] = int(sum(x.size for x in jax.tree.leaves(params)))
  return out


def run(cfg: Config, units: int = 100) -> dict:
  rng = np.random.default_rng(0)
  a, v = cfg.audio, cfg.video
  result = {"units": units, "backend": jax.default_backend(), "devices": jax.device_count(),
            "audio_bitrate_bps": round(a.bitrate_bps, 1), "video_bitrate_bps": round(v.bitrate_bps, 1)}
  audio = AudioCodec(a, rngs=nnx.Rngs(0))
  x = [jnp.asarray(0.1 * rng.standard_normal((1, a.samples_per_unit)), jnp.float32) for _ in range(units + 1)]
  c = [jnp.asarray(rng.integers(0, a.codebook_size, (1, 4, a.num_quantizers)), jnp.int32) for _ in range(units + 1)]
  result.update(_bench_codec("audio", audio, units, x, c))
  video = VideoCodec(v, rngs=nnx.Rngs(0))
  f = [jnp.asarray(rng.integers(0, 256, (1, 4, v.height, v.width, 3)), jnp.uint8) for _ in range(units + 1)]
  c = [jnp.asarray(rng.integers(0, v.codebook_size, (1, 1, v.latent_h, v.latent_w)), jnp.int32)
       for _ in range(units + 1)]
  result.update(_bench_codec("video", video, units, f, c))
  return result
