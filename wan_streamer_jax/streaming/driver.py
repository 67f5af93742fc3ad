"""Real-time driver: feeds units on the 160 ms clock, runs the step, measures latency.

    driver = RealtimeDriver(step, realtime=True)        # step(unit) -> outputs (host arrays)
    report = driver.run(units)                          # any iterable / generator of units
    report.summary()  # {"step_ms_p50": .., "latency_ms_p99": .., "real_time_factor": .., ...}

Clock model (`realtime=True`): unit `k` is captured during
`[t0 + k T, t0 + (k + 1) T]` (`T` = `unit_seconds`, 160 ms) and is available
at the end of that interval; the driver sleeps until then, runs the step
(after the previous one, if that is late), and records the step's wall time.
The step of unit `k` misses its deadline when it finishes after unit `k + 1`
is available (`t0 + (k + 2) T`): past that point the stream falls behind.
With `realtime=False` units are fed as fast as possible and a miss is a step
longer than `T`.

Reported per unit: the step time (measured around `step(unit)` and a
`jax.block_until_ready` of its outputs), the model-side response latency
`T + step time` (the time from the start of a unit's audio to the model's
answer to it, Wan-Streamer's and Moshi's definition), and with the clock also
the end-to-end latency `finish - capture start` (includes waiting behind late
steps). The real-time factor is total step time / stream duration (< 1: faster
than real time). The first `warmup_units` units (compilation) run before the
clock starts and are reported apart.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable

import jax
import numpy as np

from wan_streamer_jax.config import UNIT_SECONDS

PERCENTILES = (50, 95, 99)


@dataclasses.dataclass(frozen=True)
class LatencyReport:
  """Per-unit timings of one driven stream (seconds, clocked units only)."""

  unit_seconds: float
  realtime: bool
  step_s: np.ndarray          # float64 [units] wall time of each step
  end_to_end_s: np.ndarray    # float64 [units] finish - capture start (realtime) else unit + step
  missed: np.ndarray          # bool [units] deadline missed
  warmup_s: tuple             # step times of the warm-up units (compilation)
  wall_s: float               # wall time of the clocked part

  @property
  def units(self) -> int:
    return int(self.step_s.shape[0])

  @property
  def deadline_misses(self) -> int:
    return int(self.missed.sum())

  @property
  def latency_s(self) -> np.ndarray:
    """Model-side response latency per unit: unit duration + step time."""
    return self.unit_seconds + self.step_s

  @property
  def real_time_factor(self) -> float:
    return float(self.step_s.sum() / (self.units * self.unit_seconds)) if self.units else float("nan")

  def summary(self) -> dict:
    """JSON-able figures: step/latency percentiles in ms, misses, real-time factor."""
    out: dict[str, Any] = {"units": self.units, "unit_ms": 1000 * self.unit_seconds, "realtime_clock": self.realtime,
                           "deadline_misses": self.deadline_misses,
                           "deadline_miss_fraction": self.deadline_misses / max(self.units, 1),
                           "real_time_factor": self.real_time_factor,
                           "warmup_step_ms": [1000 * t for t in self.warmup_s]}
    if not self.units:
      return out
    for name, arr in (("step_ms", self.step_s), ("latency_ms", self.latency_s),
                      ("end_to_end_ms", self.end_to_end_s)):
      for p in PERCENTILES:
        out[f"{name}_p{p}"] = float(1000 * np.percentile(arr, p))
    out["step_ms_mean"] = float(1000 * self.step_s.mean())
    out["step_ms_max"] = float(1000 * self.step_s.max())
    return out


class RealtimeDriver:
  """Runs `step(unit) -> outputs` over a stream of units, on the unit clock or as fast as possible.

  Args:
    step: called once per unit with whatever the source yields; returns that unit's outputs
      (blocked on before the clock is read, so asynchronous dispatch does not hide time).
    unit_seconds: duration of one unit (160 ms).
    realtime: True: wait for each unit's capture to end; False: as fast as possible.
    warmup_units: units run before the clock starts (compilation), reported apart.
    clock, sleep: injectable for tests (`time.perf_counter`, `time.sleep`).
  """

  def __init__(self, step: Callable[[Any], Any], *, unit_seconds: float = UNIT_SECONDS, realtime: bool = True,
               warmup_units: int = 1, clock: Callable[[], float] = time.perf_counter,
               sleep: Callable[[float], None] = time.sleep):
    if unit_seconds <= 0:
      raise ValueError(f"unit_seconds: expected > 0, received {unit_seconds}")
    if warmup_units < 0:
      raise ValueError(f"warmup_units: expected >= 0, received {warmup_units}")
    self.step, self.unit_seconds, self.realtime = step, float(unit_seconds), bool(realtime)
    self.warmup_units, self.clock, self.sleep = int(warmup_units), clock, sleep

  def _timed(self, unit) -> tuple[Any, float, float]:
    start = self.clock()
    out = jax.block_until_ready(self.step(unit))
    end = self.clock()
    return out, start, end

  def run(self, units: Iterable, *, on_output: Callable[[int, Any, Any], None] | None = None,
          progress: Callable[[int], None] | None = None, max_units: int | None = None) -> LatencyReport:
    """Drives the whole stream; `on_output(index, unit, outputs)` after each step (not timed).

    `progress(n)` is called with the number of units done (e.g. a tqdm `update`).
    """
    T = self.unit_seconds
    warm, steps, e2e, missed = [], [], [], []
    t0 = None
    wall_start = None
    it = iter(units)
    index = 0
    while max_units is None or index < max_units:
      try:
        unit = next(it)
      except StopIteration:
        break
      if index < self.warmup_units:
        out, start, end = self._timed(unit)
        warm.append(end - start)
      else:
        k = index - self.warmup_units
        if t0 is None:
          # The clock starts now: unit k's capture begins at t0 + k T and ends at t0 + (k + 1) T.
          t0 = wall_start = self.clock() - (T if self.realtime else 0.0)
        if self.realtime:
          available = t0 + (k + 1) * T
          wait = available - self.clock()
          if wait > 0:
            self.sleep(wait)
        out, start, end = self._timed(unit)
        step_s = end - start
        steps.append(step_s)
        if self.realtime:
          e2e.append(end - (t0 + k * T))
          missed.append(end > t0 + (k + 2) * T)
        else:
          e2e.append(T + step_s)
          missed.append(step_s > T)
      if on_output is not None:
        on_output(index, unit, out)
      if progress is not None:
        progress(index + 1)
      index += 1
    wall = (self.clock() - wall_start) if wall_start is not None else 0.0
    return LatencyReport(unit_seconds=T, realtime=self.realtime, step_s=np.asarray(steps, np.float64),
                         end_to_end_s=np.asarray(e2e, np.float64), missed=np.asarray(missed, bool),
                         warmup_s=tuple(warm), wall_s=wall)


class PoolSession:
  """`unit -> outputs` over a carried state: `step(params, state, inputs, active, reset) -> (state, outputs)`.

  `unit` is `(inputs, active, reset)` (what `recording.unit_stream` yields). Outputs come back
  as host numpy in one `jax.device_get`. The state is rebound after every step (it may be donated).
  """

  def __init__(self, step: Callable, params, state):
    self._step, self.params, self.state = step, params, state

  def __call__(self, unit) -> Any:
    inputs, active, reset = unit
    self.state, outputs = self._step(self.params, self.state, inputs, active, reset)
    return jax.device_get(outputs)


def drive_recording(step: Callable, params, state, recording, *, silent_inputs: dict, slot: int = 0,
                    seed: int = 0, realtime: bool = True, unit_seconds: float = UNIT_SECONDS,
                    progress: Callable[[int], None] | None = None):
  """Streams a `recording.UserRecording` through a pool step; -> `(report, recorder, state)`.

  `silent_inputs` is the engine's `silent_inputs()` (the pool's neutral inputs); `seed` the
  conversation's sampling seed. The step is compiled first by one unit with every slot inactive (which leaves the state
  exactly as it was), so every unit of the recording is on the clock. `recorder` is an
  `outputs.StreamRecorder` holding slot `slot`'s outputs.
  """
  from wan_streamer_jax.streaming.outputs import StreamRecorder
  from wan_streamer_jax.streaming.recording import unit_stream
  off = np.zeros(silent_inputs["camera_on"].shape[0], bool)
  state, warm = step(params, state, silent_inputs, off, off)
  jax.block_until_ready(warm)
  session = PoolSession(step, params, state)
  recorder = StreamRecorder(recording, slot)
  driver = RealtimeDriver(session, unit_seconds=unit_seconds, realtime=realtime, warmup_units=0)
  report = driver.run(unit_stream(recording, silent_inputs, slot, seed), on_output=lambda i, u, o: recorder.add(i, o),
                      progress=progress)
  return report, recorder, session.state
