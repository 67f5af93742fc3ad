"""Pitch (F0) of a waveform per hop, by YIN (de Cheveigne & Kawahara 2002), in jax: the codec's F0 target.

    f0, voiced = yin_f0(x, sample_rate=16000, hop=160)   # x [B, T] float32 in [-1, 1]
    # f0 [B, T // hop] float32 Hz (F0_MIN..F0_MAX), voiced [B, T // hop] bool

Hop `t`'s analysis window is the `window` samples centred on the end of hop `t` (sample
`(t + 1) * hop`; zero-padded at the ends), the time at which the harmonic head's F0 for hop `t`
holds (`codecs/harmonic.py`). Per window: the difference function
`d(tau) = sum_j (x_j - x_{j+tau})^2` over the first `window - tau_max` samples (one FFT
cross-correlation), its cumulative-mean-normalised form `d'(tau)`, the first local minimum of
`d'` below `threshold` in the lag range of F0_MAX..F0_MIN (else the global minimum), refined by a
parabola through its neighbours. A hop is voiced when that minimum is below `threshold` and the
window's RMS is above `min_rms`. Used only as a training target (never streamed), so the window
may look ahead.

`CausalPitchFrontend` runs the same YIN over the window that *ends* at each hop (streaming state:
the last `window - hop` samples): the encoder's optional pitch input (`audio.pitch_input`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

F0_MIN = 50.0  # Hz: the lowest eSpeak voices sit near 70 Hz
F0_MAX = 600.0  # Hz: child / high variants with a wide pitch range


def _hop_frames(xp: jax.Array, hop: int, window: int, n: int) -> jax.Array:
  """`[B, P]` -> `[B, n, window]`: frame `t` is `xp[:, t * hop : t * hop + window]`."""
  return xp[:, np.arange(window)[None, :] + hop * np.arange(n)[:, None]]


def _frames(x: jax.Array, hop: int, window: int) -> jax.Array:
  """`[B, T]` -> `[B, T // hop, window]`: window `t` centred on sample `(t + 1) * hop`."""
  n = x.shape[1] // hop
  half = window // 2
  xp = jnp.pad(x[:, : n * hop], ((0, 0), (half - hop, half)))  # frame t starts at (t+1)*hop - half
  return _hop_frames(xp, hop, window, n)


def _yin(fr: jax.Array, sample_rate: int, threshold: float, f0_min: float,
         f0_max: float) -> tuple[jax.Array, jax.Array]:
  """Frames `[..., W]` -> (f0 `[...]` Hz, d' at the chosen lag `[...]`: 0 = periodic, ~1 = noise)."""
  tau_min = int(np.floor(sample_rate / f0_max))
  tau_max = int(np.ceil(sample_rate / f0_min))
  window = fr.shape[-1]
  span = window - tau_max  # integration length
  if span < tau_max:
    raise ValueError(f"yin: window={window} must be >= 2 * sample_rate / f0_min = {2 * tau_max}")
  n_fft = int(2 ** np.ceil(np.log2(window + span)))
  head = fr[..., :span]
  # cross term r(tau) = sum_{j < span} x_j x_{j+tau}, tau = 0..tau_max
  spec = jnp.conj(jnp.fft.rfft(head, n=n_fft)) * jnp.fft.rfft(fr, n=n_fft)
  r = jnp.fft.irfft(spec, n=n_fft)[..., : tau_max + 1]
  pad = [(0, 0)] * (fr.ndim - 1) + [(1, 0)]
  sq = jnp.cumsum(jnp.pad(fr * fr, pad), axis=-1)  # prefix sums of x^2
  e0 = sq[..., span][..., None]
  taus = np.arange(tau_max + 1)
  e_tau = sq[..., taus + span] - sq[..., taus]
  # + a floor of (-80 dBFS)^2 per sample: digital silence is aperiodic (d' = 1), not perfectly periodic
  d = jnp.maximum(e0 + e_tau - 2.0 * r, 0.0) + span * 1e-8  # [..., tau_max + 1]
  csum = jnp.cumsum(d[..., 1:], axis=-1)
  dn = jnp.concatenate([jnp.ones_like(d[..., :1]), d[..., 1:] * taus[1:] / jnp.maximum(csum, 1e-12)], axis=-1)
  in_range = (taus >= tau_min) & (taus < tau_max)
  nxt = jnp.concatenate([dn[..., 1:], dn[..., -1:]], axis=-1)
  prv = jnp.concatenate([dn[..., :1], dn[..., :-1]], axis=-1)
  dip = in_range & (dn < threshold) & (dn <= nxt) & (dn <= prv)
  first = jnp.argmax(dip, axis=-1)
  best = jnp.argmin(jnp.where(in_range, dn, jnp.inf), axis=-1)
  tau = jnp.where(jnp.any(dip, axis=-1), first, best)
  take = lambda a, i: jnp.take_along_axis(a, i[..., None], axis=-1)[..., 0]
  y0, y1, y2 = take(dn, jnp.maximum(tau - 1, 0)), take(dn, tau), take(dn, jnp.minimum(tau + 1, tau_max))
  denom = y0 - 2.0 * y1 + y2
  shift = jnp.where(jnp.abs(denom) > 1e-9, 0.5 * (y0 - y2) / jnp.where(jnp.abs(denom) > 1e-9, denom, 1.0), 0.0)
  tau_f = tau.astype(jnp.float32) + jnp.clip(shift, -0.5, 0.5)
  return jnp.clip(sample_rate / jnp.maximum(tau_f, 1.0), f0_min, f0_max), y1


def yin_window(sample_rate: int, f0_min: float = F0_MIN) -> int:
  """Analysis window (samples): two periods of the lowest F0 (+2)."""
  return 2 * (int(np.ceil(sample_rate / f0_min)) + 1)


def yin_f0(x: jax.Array, sample_rate: int, hop: int, *, window: int | None = None, threshold: float = 0.15,
           min_rms: float = 0.02, f0_min: float = F0_MIN, f0_max: float = F0_MAX) -> tuple[jax.Array, jax.Array]:
  """`[B, T]` float32 -> (f0 `[B, T // hop]` float32 Hz, voiced `[B, T // hop]` bool). See the module doc."""
  if x.ndim != 2:
    raise ValueError(f"yin_f0: expected x of shape [batch, samples], received shape {tuple(x.shape)}")
  fr = _frames(x.astype(jnp.float32), hop, window or yin_window(sample_rate, f0_min))  # [B, N, W]
  f0, aperiodicity = _yin(fr, sample_rate, threshold, f0_min, f0_max)
  rms = jnp.sqrt(jnp.mean(fr * fr, axis=-1))
  return f0, (aperiodicity < threshold) & (rms > min_rms)


class CausalPitchFrontend:
  """Waveform `[B, T, 1]` -> causal pitch features `[B, T / hop, 3]` for the audio encoder.

  Per hop, YIN over the `yin_window` samples that *end* at the hop's end (no look-ahead; state:
  the last `window - hop` samples, zero at the start): `log(F0 / F0_MIN) / log(F0_MAX / F0_MIN)`
  in [0, 1], the periodicity `1 - min(d', 1)` and `log(RMS + 1e-3)`. A fixed (parameter-free)
  front-end like the STFT one: the encoder sees the pitch of any voice as one number instead of
  having to infer it from 50 Hz STFT bins.
  """

  features = 3

  def __init__(self, hop: int, sample_rate: int, threshold: float = 0.15):
    self.hop, self.sample_rate, self.threshold = hop, sample_rate, threshold
    self.window = yin_window(sample_rate)

  @property
  def state_len(self) -> int:
    return self.window - self.hop

  def init_state(self, batch: int) -> jax.Array:
    return jnp.zeros((batch, self.state_len, 1), jnp.float32)

  def __call__(self, x: jax.Array, state: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    b, t = x.shape[:2]
    if t % self.hop:
      raise ValueError(f"CausalPitchFrontend: expected a time length that is a multiple of hop={self.hop}, got {t}")
    if state is None:
      state = self.init_state(b)
    xp = jnp.concatenate([state.astype(x.dtype), x], axis=1)[..., 0]  # [B, P + T]
    fr = _hop_frames(xp, self.hop, self.window, t // self.hop)  # [B, N, W]: frame t ends at hop t's end
    f0, aperiodicity = _yin(fr, self.sample_rate, self.threshold, F0_MIN, F0_MAX)
    rms = jnp.sqrt(jnp.mean(fr * fr, axis=-1))
    feats = jnp.stack([jnp.log(f0 / F0_MIN) / np.log(F0_MAX / F0_MIN),
                       1.0 - jnp.minimum(aperiodicity, 1.0), jnp.log(rms + 1e-3)], axis=-1)
    return feats, xp[:, xp.shape[1] - self.state_len:, None]
