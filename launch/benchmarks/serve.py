"""Serving round trip over loopback: `python -m launch.bench --what=serve --config=configs/small.py`.

The config's engine (random init: speed does not depend on the weights) is exported as a serving
artifact with a pool of `max(SESSIONS)` slots and loaded back with `load_server`, exactly as
`launch.serve --artifact` runs it. For each N in SESSIONS, N Python clients (`serving/client.py`)
stream the same synthetic test conversation in real time (each with its own seed), on the
server's clock (each unit sent `lead_ms` before its deadline). Figures:

  rtt_ms_p50_sessions_N / rtt_ms_p99_sessions_N   client send of a unit -> first byte of its reply
  deadline_misses_sessions_N                      steps that overran their 160 ms unit
  late_units_sessions_N                           client units that missed their deadline (silence given)
  step_ms_p50_sessions_N / step_ms_p99_sessions_N the pool step inside it (all slots, device -> host)
  rtt_ms_p50_sessions_4_unaligned (+ p99)         the same for clients on their own clock (random phase)

The first `warmup_units` units of every client are left out (connection start-up).
"""

from __future__ import annotations

import asyncio
import os
import tempfile

import numpy as np

from wan_streamer_jax.config import Config

SESSIONS = (1, 4, 8)


def _run_clients(server, rec, n: int, align: bool, lead_ms: float) -> list:
  from wan_streamer_jax.serving.client import stream_recording

  async def main():
    return await asyncio.gather(*[stream_recording(server.url + "/ws", rec, seed=i, realtime=True, align=align,
                                                   lead_ms=lead_ms) for i in range(n)])
  return asyncio.run(main())


def _figures(server, results, warmup: int, suffix: str, before: dict) -> dict:
  rtt = np.concatenate([r.rtt_ms[warmup:] for r in results])
  stats = server.pool.stats()
  steps = np.asarray(list(server.pool.step_ms)[before["steps"]:])
  return {f"rtt_ms_p50_{suffix}": round(float(np.percentile(rtt, 50)), 2),
          f"rtt_ms_p99_{suffix}": round(float(np.percentile(rtt, 99)), 2),
          f"deadline_misses_{suffix}": stats["deadline_misses"] - before["misses"],
          f"late_units_{suffix}": int(sum(r.late_units for r in results)),
          f"step_ms_p50_{suffix}": round(float(np.percentile(steps, 50)), 2),
          f"step_ms_p99_{suffix}": round(float(np.percentile(steps, 99)), 2)}


def run(cfg: Config, units: int = 60, warmup_units: int = 3, lead_ms: float = 30.0) -> dict:
  from wan_streamer_jax.export import load_server
  from wan_streamer_jax.export.checkpoints import load_engine
  from wan_streamer_jax.export.engine_artifact import export_engine
  from wan_streamer_jax.serving.server import ServerThread
  from wan_streamer_jax.streaming.recording import synthetic_recording

  slots = max(SESSIONS)
  engine, _ = load_engine(None, cfg=cfg, num_slots=slots, attention_impl="xla")
  path = os.path.join(tempfile.mkdtemp(prefix="wan_bench_serve_"), "artifact")
  export_engine(engine, path)
  runner = load_server(path)
  rec = synthetic_recording(cfg, "test", 0)
  rec = rec.truncated(units) if rec.num_units >= units else rec
  out = {"num_slots": slots, "units_per_session": rec.num_units, "lead_ms": lead_ms, "warmup_units": warmup_units}
  with ServerThread(runner, sessions=slots) as server:
    _run_clients(server, rec.truncated(warmup_units + 2), 1, True, lead_ms)  # compiles the step
    for n, align in [(n, True) for n in SESSIONS] + [(4, False)]:
      before = {"misses": server.pool.deadline_misses, "steps": len(server.pool.step_ms)}
      results = _run_clients(server, rec, n, align, lead_ms)
      out.update(_figures(server, results, warmup_units, f"sessions_{n}" + ("" if align else "_unaligned"), before))
  return out
