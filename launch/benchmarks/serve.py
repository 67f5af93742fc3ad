"""Serving round trip over loopback: `python -m launch.bench --what=serve --config=configs/small.py`.

For each N in SESSIONS the config's engine (random init: speed does not depend on the weights) is
exported as a serving artifact with a pool of N slots and loaded back with `load_server`, exactly
as `launch.serve --artifact --sessions=N` runs it; N Python clients (`serving/client.py`)
stream the same synthetic test conversation in real time (each with its own seed), on the
server's clock (each unit sent `lead_ms` before its deadline). Figures:

  rtt_ms_p50_sessions_N / rtt_ms_p99_sessions_N   client send of a unit -> first byte of its reply
  deadline_misses_sessions_N                      steps that overran their 160 ms unit
  late_units_sessions_N                           client units that missed their deadline (silence given)
  step_ms_p50_sessions_N / step_ms_p99_sessions_N the pool step inside it (all slots, device -> host)
  step_ms_alone_sessions_N                        the all-active step timed directly (no server)
  rtt_ms_p50_sessions_4_unaligned (+ p99)         the same for clients on their own clock (random phase)

The first `warmup_units` units of every client are left out (connection start-up).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

import numpy as np

from wan_streamer_jax.config import Config

SESSIONS = (1, 4, 8)


def _run_clients(server, rec, n: int, align: bool, lead_ms: float, timeout_s: float) -> list:
  from wan_streamer_jax.serving.client import stream_recording

  async def main():
    return await asyncio.gather(*[stream_recording(server.url + "/ws", rec, seed=i, realtime=True, align=align,
                                                   lead_ms=lead_ms, timeout_s=timeout_s) for i in range(n)])
  return asyncio.run(main())


def _figures(server, results, warmup: int, suffix: str, before: dict) -> dict:
  rtt = np.concatenate([r.rtt_ms[warmup:] for r in results])
  steps = np.asarray(list(server.pool.step_ms)[before["steps"]:])
  return {f"rtt_ms_p50_{suffix}": round(float(np.percentile(rtt, 50)), 2),
          f"rtt_ms_p99_{suffix}": round(float(np.percentile(rtt, 99)), 2),
          f"deadline_misses_{suffix}": server.pool.deadline_misses - before["misses"],
          f"late_units_{suffix}": int(sum(r.late_units for r in results)),
          f"step_ms_p50_{suffix}": round(float(np.percentile(steps, 50)), 2),
          f"step_ms_p99_{suffix}": round(float(np.percentile(steps, 99)), 2)}


def _serve_pool(cfg: Config, slots: int):
  """The config's engine (random init) exported with `slots` slots and loaded back (launch.serve's path)."""
  from wan_streamer_jax.export import load_server
  from wan_streamer_jax.export.checkpoints import load_engine
  from wan_streamer_jax.export.engine_artifact import export_engine
  engine, _ = load_engine(None, cfg=cfg, num_slots=slots, attention_impl="xla")
  path = os.path.join(tempfile.mkdtemp(prefix="wan_bench_serve_"), "artifact")
  export_engine(engine, path)
  runner = load_server(path)
  state, on = runner.init_state(0), np.ones(slots, bool)
  times = []
  for _ in range(3):  # compile, then time the all-active step (sizes the clients' timeouts)
    t0 = time.perf_counter()
    state, _ = runner.step(state, runner.silent_inputs(), on, on)
    times.append(time.perf_counter() - t0)
  return runner, min(times[1:])


def run(cfg: Config, units: int = 60, warmup_units: int = 3, lead_ms: float = 30.0) -> dict:
  from wan_streamer_jax.serving.server import ServerThread
  from wan_streamer_jax.streaming.recording import synthetic_recording

  rec = synthetic_recording(cfg, "test", 0)
  rec = rec.truncated(units)
  out = {"units_per_session": rec.num_units, "lead_ms": lead_ms, "warmup_units": warmup_units}
  for n in SESSIONS:
    runner, step_s = _serve_pool(cfg, n)
    out[f"step_ms_alone_sessions_{n}"] = round(step_s * 1e3, 2)
    with ServerThread(runner, sessions=n) as server:
      timeout = rec.num_units * max(0.16, 2 * step_s) + 120  # an overloaded pool still finishes
      for align in (True, False) if n == 4 else (True,):
        before = {"misses": server.pool.deadline_misses, "steps": len(server.pool.step_ms)}
        results = _run_clients(server, rec, n, align, lead_ms, timeout)
        out.update(_figures(server, results, warmup_units, f"sessions_{n}" + ("" if align else "_unaligned"), before))
  return out
