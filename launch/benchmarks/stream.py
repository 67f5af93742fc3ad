"""Streaming step speed: `python -m launch.bench --what=stream --config=configs/stream_demo.py`.

One JSON object:

- `step_ms_p50/p95/p99`, `latency_ms_p50/p99` (model-side: 160 ms unit + step), `real_time_factor`,
  `deadline_misses`: one session (a pool of 1) fed a synthetic held-out conversation unit by
  unit through the real-time driver as fast as possible (each unit waited for);
- `model_flops_per_unit` (analytic Transformer matmul FLOPs, `model/flops.py`, at a full
  cache; the codecs and sampling are not counted), `matmul_peak_flops_per_s` and `peak_fraction` = model FLOPs / step time / peak, with the
  peak probed between rounds of steps so both see the same machine load;
- `pools`: for 1, 2, 4, 8 slots (every slot active) the step p50/p99 and whether p99 fits the
  160 ms unit; `max_realtime_sessions` = the largest such pool;
- `constant_time`: a long run of `long_units` units of the `long_config` config through the
  step (one compiled step, no recompilation): `ratio_sequential` = median step time over
  units [L-100, L) / over units [100, 200); `ratio_interleaved` = the same two states
  (snapshots at units 100 and L-100) stepped alternately, which cancels machine-load drift;
  `rss_growth` = resident memory growth from unit 200 to the end; NaN count of the outputs.
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from wan_streamer_jax.train.throughput import peak_probe
from wan_streamer_jax.config import UNIT_SECONDS, Config, load_config
from wan_streamer_jax.model import flops
from wan_streamer_jax.streaming.driver import PoolSession, RealtimeDriver
from wan_streamer_jax.streaming.recording import synthetic_recording, unit_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POOLS = (1, 2, 4, 8)


WINDOWLESS_CACHE_UNITS = 256  # cache capacity for a config without a window (the step's cost grows with it)


def _engine(cfg: Config, slots: int):
  from wan_streamer_jax.export.checkpoints import load_engine
  engine, _ = load_engine(None, cfg=cfg, num_slots=slots, max_units=WINDOWLESS_CACHE_UNITS)
  return engine


def _pool_units(rec, template: dict, count: int, start: int = 0):
  """Every slot active with the conversation at a different offset; reset at the first unit."""
  n, slots = rec.num_units, template["camera_on"].shape[0]
  for k in range(count):
    inputs = template
    for s in range(slots):
      inputs = unit_inputs(rec, (start + k + 7 * s) % n, inputs, slot=s, seed=s)
    yield inputs, np.ones(slots, bool), np.full(slots, k == 0)


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _warm(engine):
  state = engine.init_state(seed=0)
  off = np.zeros(engine.num_slots, bool)
  t0 = time.perf_counter()
  state, out = engine.step(engine.params, state, engine.silent_inputs(), off, off)
  jax.block_until_ready(out)
  return state, time.perf_counter() - t0


def _drive(engine, state, units):
  session = PoolSession(engine.step, engine.params, state)
  report = RealtimeDriver(session, realtime=False, warmup_units=0).run(units)
  return report, session.state


def _single_session(cfg: Config, units: int, rounds: int, rec) -> dict:
  engine = _engine(cfg, 1)
  state, compile_s = _warm(engine)
  probes = [peak_probe(jnp.float32, 1024), peak_probe(jnp.float32, 2048)]
  model_flops = flops.streaming_flops_per_unit(cfg, context_units=engine.capacity_units - 1)
  per_round = max(1, units // rounds)
  steps, peaks, fractions = [], [], []
  for r in range(rounds):
    report, state = _drive(engine, state, _pool_units(rec, engine.silent_inputs(), per_round, start=r * per_round))
    peak = max(p() for p in probes)
    steps.append(report.step_s)
    peaks.append(peak)
    fractions.append(model_flops / float(np.median(report.step_s)) / peak)
  all_steps = np.concatenate(steps)
  from wan_streamer_jax.streaming.driver import LatencyReport
  merged = LatencyReport(UNIT_SECONDS, False, all_steps, UNIT_SECONDS + all_steps, all_steps > UNIT_SECONDS, (),
                         float(all_steps.sum()))
  s = merged.summary()
  return {**{k: s[k] for k in ("units", "step_ms_p50", "step_ms_p95", "step_ms_p99", "step_ms_mean",
                              "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "real_time_factor",
                              "deadline_misses")},
          "compile_seconds": compile_s, "cache_units": engine.capacity_units, "tokens_per_unit": flops.model_cost(cfg).tokens_per_unit,
          "model_flops_per_unit": model_flops,
          "matmul_peak_flops_per_s": statistics.median(peaks), "peak_fraction": statistics.median(fractions),
          "peak_fraction_per_round": fractions}


def _pools(cfg: Config, units: int, rec) -> dict:
  out = {}
  for slots in POOLS:
    engine = _engine(cfg, slots)
    state, _ = _warm(engine)
    report, _ = _drive(engine, state, _pool_units(rec, engine.silent_inputs(), units))
    s = report.summary()
    out[str(slots)] = {"step_ms_p50": s["step_ms_p50"], "step_ms_p99": s["step_ms_p99"],
                       "step_ms_per_session_p50": s["step_ms_p50"] / slots,
                       "realtime_at_p99": s["step_ms_p99"] <= 1000 * UNIT_SECONDS}
    logging.info("pool %d: %s", slots, out[str(slots)])
    del engine
  fits = [int(k) for k, v in out.items() if v["realtime_at_p99"]]
  return {"pools": out, "max_realtime_sessions": max(fits) if fits else 0}


def long_config() -> tuple[Config, str]:
  """The tiny config, with a bounded window when it has none (a ring cache needs one)."""
  cfg = load_config(os.path.join(ROOT, "configs", "tiny.py"))
  if cfg.model.window_units is None:
    cfg = cfg.replace(model={"window_units": 16, "sink_units": 1})
  return cfg, f"tiny (window_units={cfg.model.window_units}, sink_units={cfg.model.sink_units})"


def _copy(state):
  return jax.tree.map(jnp.copy, state)


def constant_time(units: int = 10_000, ab_rounds: int = 100) -> dict:
  if units < 400:
    raise ValueError(f"stream_long_units: expected 0 (skip) or >= 400, received {units}")
  cfg, name = long_config()
  rec = synthetic_recording(cfg, "validation", 0)
  engine = _engine(cfg, 1)
  state, _ = _warm(engine)
  params, step = engine.params, engine.step
  compiled = engine.compiled_step
  cache_before = compiled._cache_size()  # noqa: SLF001 — jit's count of compiled variants
  times = np.zeros(units)
  nan_units = 0
  snapshots = {}
  rss = {}
  for k, (inputs, active, reset) in enumerate(_pool_units(rec, engine.silent_inputs(), units)):
    if k in (100, units - 100):
      snapshots[k] = _copy(state)
    t0 = time.perf_counter()
    state, out = step(params, state, inputs, active, reset)
    out = jax.device_get(out)
    times[k] = time.perf_counter() - t0
    nan_units += int(not np.isfinite(out["audio"]).all())
    if k == 200:
      rss["start"] = _rss_bytes()
  rss["end"] = _rss_bytes()
  cache_after = compiled._cache_size()  # noqa: SLF001
  early, late = times[100:200], times[units - 100:units]
  # A/B: step the two saved states alternately, same inputs, so load drift hits both alike.
  ab = {100: [], units - 100: []}
  inputs, active, reset = next(_pool_units(rec, engine.silent_inputs(), 2, start=1))
  reset = np.zeros(1, bool)
  for _ in range(ab_rounds):
    for k, snap in snapshots.items():
      s = _copy(snap)
      jax.block_until_ready(s)
      t0 = time.perf_counter()
      s, out = step(params, s, inputs, active, reset)
      jax.device_get(out)
      ab[k].append(time.perf_counter() - t0)
  ratio_ab = float(np.median(ab[units - 100]) / np.median(ab[100]))
  return {"config": name, "units": units,
          "step_ms_units_100_200": float(1000 * np.median(early)),
          f"step_ms_units_{units - 100}_{units}": float(1000 * np.median(late)),
          "ratio_sequential": float(np.median(late) / np.median(early)),
          "ratio_interleaved": ratio_ab,
          "within_5_percent": bool(abs(ratio_ab - 1) <= 0.05),
          "recompilations": cache_after - cache_before,
          "rss_growth": (rss["end"] - rss["start"]) / rss["start"],
          "units_with_nan_audio": nan_units, "seconds": float(times.sum())}


def run(cfg: Config, units: int = 200, rounds: int = 5, pool_units: int = 60, long_units: int = 10_000) -> dict:
  rec = synthetic_recording(cfg, "validation", 0)
  result = {"backend": jax.default_backend(), "devices": jax.device_count(),
            "window_units": cfg.model.window_units, "sink_units": cfg.model.sink_units,
            "attention_impl": cfg.model.attention_impl, "unit_ms": 1000 * UNIT_SECONDS}
  result.update(_single_session(cfg, units, rounds, rec))
  result.update(_pools(cfg, pool_units, rec))
  if long_units:
    result["constant_time"] = constant_time(long_units)
  return result
