"""Codec2 (Rowe; Debian's `codec2` package: `c2enc` / `c2dec`) as a reference speech codec.

Codec2 is a classical 8 kHz parametric (sinusoidal) speech codec, 450..3200 bps. A round
trip here: float audio at any rate -> resampled to 8 kHz (`scipy.signal.resample_poly`,
which low-passes at 4 kHz) -> 16-bit PCM -> `c2enc MODE - -` -> `c2dec MODE - -` -> back to
the input rate. Codec2 has a fixed algorithmic delay (its frames and interpolation); scores
against the input are only meaningful once it is removed: `estimate_delay` finds the lag
maximising the cross-correlation of output and input, and `roundtrip(..., delay=d)` shifts
the output left by `d` samples (zero-filling the end), so that sample `t` of the output
lines up with sample `t` of the input.

    codec = Codec2(1200)                       # raises if c2enc/c2dec are not installed
    d = codec.fixed_delay(utterances, 16000)   # median over utterances, in samples at 16 kHz
    y = codec.roundtrip(x, 16000, delay=d)
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
from scipy import signal

MODES = (3200, 2400, 1600, 1400, 1300, 1200)
CODEC2_RATE = 8000
MAX_DELAY_S = 0.1


def available() -> bool:
  """True when `c2enc` and `c2dec` are on PATH (`apt-get install -y codec2`)."""
  return shutil.which("c2enc") is not None and shutil.which("c2dec") is not None


def estimate_delay(out: np.ndarray, ref: np.ndarray, max_lag: int) -> int:
  """Lag `d` in [0, max_lag] maximising sum_t out[t + d] * ref[t] (`[T]` arrays at one rate)."""
  n = min(out.shape[0], ref.shape[0])
  size = 1 << int(np.ceil(np.log2(2 * n)))
  xc = np.fft.irfft(np.fft.rfft(out[:n], size) * np.conj(np.fft.rfft(ref[:n], size)), size)
  return int(np.argmax(xc[: max_lag + 1]))


class Codec2:
  """One Codec2 mode (bits per second) as a float-audio round trip."""

  def __init__(self, mode: int):
    if mode not in MODES:
      raise ValueError(f"Codec2 mode: expected one of {MODES} bps, got {mode!r}")
    if not available():
      raise RuntimeError("Codec2 needs `c2enc` and `c2dec` (Debian/Ubuntu: apt-get install -y codec2)")
    self.mode = int(mode)

  @property
  def bitrate_bps(self) -> float:
    return float(self.mode)

  def _run(self, pcm: bytes) -> bytes:
    enc = subprocess.run(["c2enc", str(self.mode), "-", "-"], input=pcm, capture_output=True, check=True)
    dec = subprocess.run(["c2dec", str(self.mode), "-", "-"], input=enc.stdout, capture_output=True, check=True)
    return dec.stdout

  def roundtrip(self, audio: np.ndarray, sample_rate: int, delay: int = 0) -> np.ndarray:
    """`[T]` float in [-1, 1] at `sample_rate` -> Codec2-coded `[T]` float32 at `sample_rate`."""
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 1 or audio.size == 0:
      raise ValueError(f"Codec2.roundtrip: expected non-empty audio of shape [samples], got {audio.shape}")
    if sample_rate <= 0 or sample_rate % 100:
      raise ValueError(f"Codec2.roundtrip: expected a sample rate in Hz divisible by 100, got {sample_rate}")
    g = np.gcd(sample_rate, CODEC2_RATE)
    x8 = signal.resample_poly(audio, CODEC2_RATE // g, sample_rate // g)
    pcm = (np.clip(x8, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    y8 = np.frombuffer(self._run(pcm), "<i2").astype(np.float64) / 32768.0
    y = signal.resample_poly(y8, sample_rate // g, CODEC2_RATE // g)
    out = np.zeros(audio.shape[0], np.float32)
    y = y[delay:delay + audio.shape[0]]
    out[: y.shape[0]] = y
    return out

  def fixed_delay(self, utterances, sample_rate: int) -> int:
    """Codec2's delay in samples at `sample_rate`: the median of per-utterance estimates."""
    lags = [estimate_delay(self.roundtrip(u, sample_rate), np.asarray(u, np.float64),
                           int(MAX_DELAY_S * sample_rate)) for u in utterances]
    if not lags:
      raise ValueError("Codec2.fixed_delay: expected at least one utterance")
    return int(np.median(lags))
