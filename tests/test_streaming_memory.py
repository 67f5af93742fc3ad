"""Unbounded streams in bounded memory: 10,000 units (~27 minutes) through the step of the tiny
windowed engine: one compile, no NaN, resident memory flat after warm-up. (The step-time ratio
over the conversation is measured by `launch/bench.py --what=stream`.)"""

import jax
import numpy as np
import pytest

from tests.streaming_fixtures import engine, random_inputs, unit

UNITS, WARMUP = 10_000, 500


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * 4096


@pytest.mark.slow
def test_ten_thousand_units_one_compile_no_nan_flat_memory():
  eng = engine(1)
  feed = random_inputs(eng, 16, seed=11)  # 16 distinct units of user input, cycled
  state = eng.init_state(seed=0)
  on, off = np.ones(1, bool), np.zeros(1, bool)
  compiles = eng.compiled_step._cache_size()
  peak_abs, rss_warm, units_seen = 0.0, None, []
  for t in range(UNITS):
    state, out = eng.step(eng.params, state, unit(feed, t % 16), on, off)
    if t % 100 == 99 or t == UNITS - 1:  # one host sync per 100 units, as a driver fetching outputs
      out = jax.device_get(out)
      assert np.isfinite(out["audio"]).all(), f"NaN/inf audio at unit {t}"
      peak_abs = max(peak_abs, float(np.abs(out["audio"]).max()))
      units_seen.append(int(out["unit"][0]))
    if t == WARMUP:
      rss_warm = _rss_bytes()
  rss_end = _rss_bytes()
  assert eng.compiled_step._cache_size() == max(compiles, 1), "the step recompiled"
  assert units_seen[-1] == UNITS - 1
  assert (rss_end - rss_warm) / rss_warm < 0.02, f"RSS grew {rss_warm / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB"
  # the ring wrapped thousands of times and the model's logits stayed finite
  assert np.isfinite(np.asarray(state.cache.k)).all() and np.asarray(state.unit)[0] == UNITS
  assert peak_abs <= 1.0
