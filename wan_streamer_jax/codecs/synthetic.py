"""Generated stand-in conversations for codec smoke runs and tests (no corpus needed).

`SyntheticSignalSource(cfg, n)` is a random-access source with the raw fields
the data pipeline's raw-window head reads (`data_pipelines.pipelines.RawWindow`):
user/model audio (voiced "syllables": harmonic tones with a moving pitch and
on/off envelopes, plus a little noise) and user/model video (coloured squares
moving over a gradient). Example `i` is a pure function of `(seed, i)`.
"""

from __future__ import annotations

import numpy as np

from wan_streamer_jax.config import FRAMES_PER_UNIT, Config


def voiced_audio(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
  """Syllable-like harmonic signal `[n]` float32 in [-1, 1]."""
  t = np.arange(n) / sample_rate
  f0 = rng.uniform(90, 250) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
  phase = 2 * np.pi * np.cumsum(f0) / sample_rate
  x = sum(np.sin(k * phase) / k for k in range(1, 12) if k * f0.max() < sample_rate / 2)
  syll = (np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)) > -0.2).astype(np.float64)
  env = np.convolve(syll, np.hanning(int(0.02 * sample_rate)) / (0.01 * sample_rate), mode="same")
  x = 0.25 * env * x / np.max(np.abs(x) + 1e-9) + 0.003 * rng.standard_normal(n)
  return np.clip(x, -1, 1).astype(np.float32)


def moving_squares(rng: np.random.Generator, frames: int, h: int, w: int) -> np.ndarray:
  """`[frames, h, w, 3]` uint8: gradient background + 2 moving coloured squares."""
  yy, xx = np.mgrid[0:h, 0:w]
  bg = np.stack([xx * 200 // w + 20, yy * 200 // h + 20, np.full_like(xx, rng.integers(40, 200))], -1)
  out = np.empty((frames, h, w, 3), np.uint8)
  squares = [(rng.integers(0, 256, 3), rng.integers(h // 8, h // 3), rng.uniform(0, w), rng.uniform(0, h),
              rng.uniform(-1.5, 1.5) * w / 64, rng.uniform(-1.5, 1.5) * h / 64) for _ in range(2)]
  for f in range(frames):
    img = bg.copy()
    for col, size, x0, y0, vx, vy in squares:
      cx, cy = int(x0 + vx * f) % w, int(y0 + vy * f) % h
      img[cy:cy + size, cx:cx + size] = col
    out[f] = img
  return out


class SyntheticSignalSource:
  """Random-access conversations of `units` units with the raw fields of the corpus."""

  def __init__(self, cfg: Config, num_examples: int, units: int = 30, seed: int = 0):
    self.cfg, self.n, self.units, self.seed = cfg, int(num_examples), int(units), int(seed)

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.n:
      raise IndexError(index)
    rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index)]))
    a, v, u = self.cfg.audio, self.cfg.video, self.units
    n = u * a.samples_per_unit
    return {
        "num_units": np.int32(u),
        "user_camera_on": np.ones(u, bool),
        "user_audio": voiced_audio(rng, n, a.sample_rate),
        "model_audio": voiced_audio(rng, n, a.sample_rate),
        "user_video": moving_squares(rng, u * FRAMES_PER_UNIT, v.height, v.width),
        "model_video": moving_squares(rng, u * FRAMES_PER_UNIT, v.height, v.width),
    }
