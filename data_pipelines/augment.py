"""Codec-training augmentation: a seeded Grain map over raw audio windows.

`CodecAugment(sample_rate, babble_source=...)` is a `grain.transforms.RandomMap` applied to
the raw head's elements (`pipelines.raw_pipeline(..., window_map=...)`), before batching.
Grain seeds each element's generator from the pipeline seed and the element's position, so
a resumed run (restored iterator state) sees exactly the same augmented windows.

Each window (`audio` float32 `[N * samples_per_unit]` in [-1, 1], `unit_mask` bool `[N]`)
is left clean with probability `clean_prob`; otherwise each effect applies with its own
probability, in this order (a microphone chain: the room, the noise in it, the device):

  reverb     room impulse response: exponentially decaying noise, RT60 0.1-0.9 s, wet/dry mix
  noise      additive at SNR 0-30 dB (against the window's speech power): white, coloured
             (1/f^a spectrum, a in [-1, 2]: blue..brown) or babble (2-5 windows of other
             conversations' speech, `babble_source`)
  eq         3 random peaking bands of +-9 dB, and a band limit: high-pass 50-300 Hz and a
             low-pass from telephone (3.4 kHz) up to full band
  gain       -18..+6 dB (the peak is then limited to 0.99 unless clipping follows)
  clipping   hard clip at 30-90 % of the peak

The codec learns to reproduce what it is given (the target is the augmented window), noise
included. `speech_activity` (float32 scalar, fraction of 40 ms frames of the *clean* window
with RMS > 0.02) is added so that the launcher can still pick speech-active windows. Zero
padding past the end of a conversation (`unit_mask` False) stays zero.
"""

from __future__ import annotations

from typing import Callable

import grain
import numpy as np
from scipy import signal

SNR_DB = (0.0, 30.0)
RT60_S = (0.1, 0.9)
GAIN_DB = (-18.0, 6.0)
TELEPHONE_HZ = 3400.0
ACTIVITY_THRESHOLD = 0.02  # RMS of a 40 ms frame that counts as speech (as codecs.training.speech_activity)


def speech_activity(audio: np.ndarray, sample_rate: int) -> float:
  """Fraction of 40 ms frames of `[T]` audio with RMS > `ACTIVITY_THRESHOLD`."""
  spf = sample_rate // 25
  n = audio.shape[0] // spf
  if n == 0:
    return 0.0
  frames = audio[: n * spf].reshape(n, spf)
  return float(np.mean(np.sqrt(np.mean(frames ** 2, axis=-1)) > ACTIVITY_THRESHOLD))


def _speech_power(x: np.ndarray, sample_rate: int) -> float:
  """Mean power over the active 40 ms frames (whole window if none is active)."""
  spf = sample_rate // 25
  n = x.shape[0] // spf
  frames = x[: n * spf].reshape(n, spf) if n else x[None]
  p = np.mean(frames ** 2, axis=-1)
  active = np.sqrt(p) > ACTIVITY_THRESHOLD
  return float(np.mean(p[active]) if active.any() else np.mean(p))


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
  """Unit-power noise `[n]` with a 1/f^exponent power spectrum (0 white, 1 pink, 2 brown, <0 blue)."""
  spec = np.fft.rfft(rng.standard_normal(n))
  f = np.arange(spec.shape[0], dtype=np.float64)
  f[0] = 1.0
  spec *= f ** (-exponent / 2.0)
  spec[0] = 0.0
  x = np.fft.irfft(spec, n)
  return (x / max(np.sqrt(np.mean(x ** 2)), 1e-12)).astype(np.float32)


def room_impulse_response(rng: np.random.Generator, sample_rate: int, rt60: float) -> np.ndarray:
  """Synthetic RIR `[L]`: a unit direct path then noise decaying 60 dB in `rt60` seconds."""
  n = max(2, int(rt60 * sample_rate))
  t = np.arange(n) / sample_rate
  tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 60 dB of amplitude
  onset = int(rng.uniform(0.002, 0.01) * sample_rate)  # first reflections after the direct sound
  tail[:onset] = 0.0
  h = np.zeros(n)
  h[0] = 1.0
  drr_db = rng.uniform(-3.0, 12.0)  # direct-to-reverberant energy ratio
  h += tail * np.sqrt(1.0 / (10 ** (drr_db / 10.0) * max(np.sum(tail ** 2), 1e-12)))
  return h.astype(np.float32)


def _peaking_sos(freq: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
  """RBJ cookbook peaking biquad as one second-order section `[1, 6]`."""
  a = 10 ** (gain_db / 40.0)
  w = 2 * np.pi * freq / sample_rate
  alpha = np.sin(w) / (2 * q)
  b = np.array([1 + alpha * a, -2 * np.cos(w), 1 - alpha * a])
  den = np.array([1 + alpha / a, -2 * np.cos(w), 1 - alpha / a])
  return np.concatenate([b / den[0], den / den[0]])[None]


class CodecAugment(grain.transforms.RandomMap):
  """Seeded augmentation of raw audio windows (module docstring). Probabilities per effect."""

  def __init__(self, sample_rate: int, babble_source: Callable[[np.random.Generator], np.ndarray] | None = None,
               *, clean_prob: float = 0.5, reverb_prob: float = 0.3, noise_prob: float = 0.5,
               babble_prob: float = 0.3, eq_prob: float = 0.5, gain_prob: float = 0.5, clip_prob: float = 0.1):
    for name, p in (("clean_prob", clean_prob), ("reverb_prob", reverb_prob), ("noise_prob", noise_prob),
                    ("babble_prob", babble_prob), ("eq_prob", eq_prob), ("gain_prob", gain_prob),
                    ("clip_prob", clip_prob)):
      if not 0.0 <= p <= 1.0:
        raise ValueError(f"CodecAugment.{name}: expected a probability in [0, 1], got {p}")
    if sample_rate <= 0:
      raise ValueError(f"CodecAugment.sample_rate: expected a positive rate in Hz, got {sample_rate}")
    self.sr = int(sample_rate)
    self.babble_source = babble_source
    self.p = dict(clean=clean_prob, reverb=reverb_prob, noise=noise_prob, babble=babble_prob, eq=eq_prob,
                  gain=gain_prob, clip=clip_prob)

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    audio = np.asarray(element["audio"], np.float32)
    if audio.ndim != 1:
      raise ValueError(f"CodecAugment: expected element['audio'] of shape [samples], got {audio.shape}")
    out = dict(element)
    out["speech_activity"] = np.float32(speech_activity(audio, self.sr))
    if rng.random() < self.p["clean"]:
      return out
    mask = element.get("unit_mask")
    valid = audio.shape[0]
    if mask is not None and len(mask):
      valid = int(np.sum(mask)) * (audio.shape[0] // len(mask))
    x = self.augment(audio[:valid].astype(np.float64), rng)
    y = np.zeros_like(audio)
    y[:valid] = x
    out["audio"] = y
    return out

  def augment(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`[T]` float64 -> `[T]` float32 in [-1, 1] (the effect chain of the module docstring)."""
    sr, p, n = self.sr, self.p, x.shape[0]
    if n == 0:
      return x.astype(np.float32)
    peak_in = max(float(np.max(np.abs(x))), 1e-4)
    if rng.random() < p["reverb"]:
      h = room_impulse_response(rng, sr, rng.uniform(*RT60_S))
      wet = signal.fftconvolve(x, h)[:n]
      x = wet * np.sqrt(np.sum(x ** 2) / max(np.sum(wet ** 2), 1e-12))
    if rng.random() < p["noise"]:
      power = _speech_power(x, sr)
      if self.babble_source is not None and rng.random() < p["babble"]:
        noise = np.zeros(n)
        for _ in range(int(rng.integers(2, 6))):
          other = np.asarray(self.babble_source(rng), np.float64)[:n]
          noise[: other.shape[0]] += other
      else:
        noise = coloured_noise(rng, n, float(rng.uniform(-1.0, 2.0))).astype(np.float64)
      noise_power = float(np.mean(noise ** 2))
      if noise_power > 1e-12 and power > 1e-12:
        snr = rng.uniform(*SNR_DB)
        x = x + noise * np.sqrt(power / (noise_power * 10 ** (snr / 10.0)))
    if rng.random() < p["eq"]:
      sos = [signal.butter(2, rng.uniform(50.0, 300.0), "highpass", fs=sr, output="sos")]
      top = rng.uniform(TELEPHONE_HZ, sr / 2 * 1.05)
      if top < 0.95 * sr / 2:
        sos.append(signal.butter(int(rng.integers(2, 7)), top, "lowpass", fs=sr, output="sos"))
      for _ in range(3):
        freq = float(np.exp(rng.uniform(np.log(100.0), np.log(0.45 * sr))))
        sos.append(_peaking_sos(freq, rng.uniform(-9.0, 9.0), rng.uniform(0.5, 2.0), sr))
      x = signal.sosfilt(np.concatenate(sos), x)  # causal, like a device's filters
    peak = max(float(np.max(np.abs(x))), 1e-9)
    x = x * (peak_in / peak)  # back to the input's level before the gain stage
    if rng.random() < p["gain"]:
      x = x * 10 ** (rng.uniform(*GAIN_DB) / 20.0)
    if rng.random() < p["clip"]:
      c = rng.uniform(0.3, 0.9) * float(np.max(np.abs(x)))
      x = np.clip(x, -c, c)
    peak = float(np.max(np.abs(x)))
    if peak > 0.99:
      x = x * (0.99 / peak)
    return x.astype(np.float32)


class BabbleSource:
  """Random speech windows of `samples` samples from a corpus source (`user_audio`/`model_audio`).

  `__call__(rng)` picks a conversation, a stream and an offset at random: other people's
  utterances to mix in as babble noise. Reads go through `source[i]` (cache the source).
  """

  def __init__(self, source, samples: int):
    if len(source) == 0:
      raise ValueError("BabbleSource: expected a non-empty corpus source")
    self.source, self.samples = source, int(samples)

  def __call__(self, rng: np.random.Generator) -> np.ndarray:
    ex = self.source[int(rng.integers(len(self.source)))]
    audio = np.asarray(ex["user_audio" if rng.random() < 0.5 else "model_audio"], np.float32)
    if audio.shape[0] <= self.samples:
      return audio
    start = int(rng.integers(0, audio.shape[0] - self.samples + 1))
    return audio[start:start + self.samples]
