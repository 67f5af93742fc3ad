"""Real-time driver: latency statistics from measured step times, deadline misses on the unit clock."""

import time

import numpy as np
import pytest

from wan_streamer_jax.streaming.driver import PoolSession, RealtimeDriver


class FakeClock:
  """A clock that only moves when the step 'works' or the driver sleeps."""

  def __init__(self):
    self.now = 100.0
    self.slept = []

  def clock(self):
    return self.now

  def sleep(self, s):
    assert s > 0
    self.slept.append(s)
    self.now += s


def test_realtime_clock_counts_misses_and_queueing_exactly():
  T = 0.16
  durations = [5.0, 0.02, 0.03, 0.40, 0.01, 0.01, 0.01, 0.01, 0.05, 0.02]  # unit 0: "compile"
  fc = FakeClock()

  def step(u):
    fc.now += durations[u]
    return {"u": np.int32(u)}

  seen = []
  report = RealtimeDriver(step, unit_seconds=T, realtime=True, warmup_units=1, clock=fc.clock,
                          sleep=fc.sleep).run(range(len(durations)), on_output=lambda i, u, o: seen.append(int(o["u"])))
  assert seen == list(range(10))
  assert report.warmup_s == (5.0,)
  np.testing.assert_allclose(report.step_s, durations[1:], atol=1e-9)
  # Clocked unit k (source unit k + 1) is available at t0 + (k+1) T and due by t0 + (k+2) T (times
  # below relative to t0). k=2 (0.40 s) starts at 0.48, ends at 0.88 > 0.64: miss. k=3 is available at
  # 0.64 but starts at 0.88, ends at 0.89 > 0.80: miss (queued). k=4 ends at 0.90 <= 0.96: caught up.
  assert report.missed.tolist() == [False, False, True, True, False, False, False, False, False]
  assert report.deadline_misses == 2
  e2e = report.end_to_end_s
  np.testing.assert_allclose(e2e[0], T + 0.02, atol=1e-9)   # captured during [t0, t0+T], done 0.02 later
  np.testing.assert_allclose(e2e[3], 0.89 - 3 * T, atol=1e-9)  # captured from 3T, waited behind k=2
  s = report.summary()
  np.testing.assert_allclose(s["step_ms_p50"], 1000 * np.percentile(durations[1:], 50))
  np.testing.assert_allclose(s["latency_ms_p99"], 1000 * (T + np.percentile(durations[1:], 99)))
  np.testing.assert_allclose(s["real_time_factor"], sum(durations[1:]) / (9 * T))
  assert s["deadline_misses"] == 2 and s["units"] == 9


def test_as_fast_as_possible_never_sleeps_and_misses_are_slow_steps():
  fc = FakeClock()
  durations = [0.01, 0.2, 0.01, 0.17, 0.16]

  def step(u):
    fc.now += durations[u]
    return u

  report = RealtimeDriver(step, realtime=False, warmup_units=0, clock=fc.clock, sleep=fc.sleep).run(range(5))
  assert fc.slept == []
  assert report.missed.tolist() == [False, True, False, True, False]
  np.testing.assert_allclose(report.latency_s, 0.16 + np.array(durations))
  np.testing.assert_allclose(report.wall_s, sum(durations))


def test_real_sleeping_step_is_measured_on_the_wall_clock():
  """A step that really takes ~30 ms: the driver's figures come from measured time, not a model."""
  def step(u):
    time.sleep(0.030 if u % 4 else 0.090)
    return u

  report = RealtimeDriver(step, unit_seconds=0.06, realtime=True, warmup_units=1).run(range(13))
  ms = 1000 * report.step_s
  assert report.units == 12
  assert np.median(ms) >= 29.5 and np.median(ms) < 60
  assert ms.max() >= 89.5                                 # units 4, 8, 12 sleep 90 ms
  assert report.deadline_misses >= 1                      # 90 ms > the 60 ms slack to the next unit
  assert report.summary()["step_ms_p99"] >= 89.5


def test_generator_source_and_pool_session_carry_state():
  def step(params, state, inputs, active, reset):
    state = np.where(reset, 0, state) + np.where(active, inputs["x"], 0) * params
    return state, {"sum": state.copy()}

  def units():
    for k in range(5):
      yield {"x": np.full(2, k, np.int32)}, np.array([True, k % 2 == 0]), np.array([k == 0, False])

  session = PoolSession(step, 10, np.zeros(2, np.int32))
  outs = []
  RealtimeDriver(session, realtime=False, warmup_units=0).run(units(), on_output=lambda i, u, o: outs.append(o))
  assert [o["sum"].tolist() for o in outs][-1] == [100, 60]  # slot 0: 10*(0+1+2+3+4); slot 1: 10*(0+2+4)
  assert session.state.tolist() == [100, 60]


def test_bad_arguments():
  with pytest.raises(ValueError, match="unit_seconds"):
    RealtimeDriver(lambda u: u, unit_seconds=0)
  with pytest.raises(ValueError, match="warmup_units"):
    RealtimeDriver(lambda u: u, warmup_units=-1)
