"""Codec training losses (jittable, float32).

Audio: L1 on the waveform + multi-resolution STFT (spectral convergence + log
magnitude L1) + optional multi-resolution log-mel L1.
Video: L1 + L2 on pixels in [-1, 1] + optional (1 - SSIM).
All losses are means over the batch; inputs `[B, T]` (audio) or `[B, T, H, W, 3]` (video).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

STFT_RESOLUTIONS = ((256, 64), (512, 128), (1024, 256), (2048, 512))  # (n_fft, hop) at 16 kHz
_EPS = 1e-5
# Default floor added to (unnormalised, Hann) magnitudes before the log in the losses
# (`codec_train.log_floor`): white noise of about -60 dBFS (n_fft 256) to -66 dBFS (n_fft 1024) sits
# at it per STFT bin, and the log-STFT term barely sees energy well below it (a mel band sums many
# bins, so the mel term still charges -80 dBFS noise in silence). A much tinier floor makes the log
# terms chase exact digital silence and dominate the loss.
LOG_FLOOR = 1e-2
# Upper edge of the telephone band: STOI's third-octave bands and narrow-band PESQ end below it, and
# the speech cues of intelligibility (formants F1-F3, most consonant energy) sit in it.
NARROWBAND_HZ = 4000.0


def stft(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """`[B, T]` -> complex `[B, frames, n_fft//2 + 1]` Hann-windowed STFT (frames fully inside the signal)."""
  t = x.shape[-1]
  if t < n_fft:
    x = jnp.pad(x, ((0, 0), (0, n_fft - t)))
    t = n_fft
  n_frames = 1 + (t - n_fft) // hop
  idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
  frames = x[:, idx] * jnp.asarray(np.hanning(n_fft + 1)[:-1], jnp.float32)
  return jnp.fft.rfft(frames, axis=-1)


def magnitude(spec: jax.Array) -> jax.Array:
  """|spec| of a complex STFT, with a finite gradient at 0 (`sqrt(re^2 + im^2 + 1e-10)`)."""
  return jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + _EPS ** 2)


def stft_magnitude(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """`[B, T]` -> `[B, frames, n_fft//2 + 1]` Hann-windowed |STFT| (frames fully inside the signal)."""
  return magnitude(stft(x, n_fft, hop))


def _mel_points(fmin: float, fmax: float, n_mels: int) -> np.ndarray:
  """`n_mels + 2` frequencies (Hz) equally spaced on the HTK mel scale: band edges and centres."""
  mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  return 700.0 * (10 ** (np.linspace(mel(fmin), mel(fmax), n_mels + 2) / 2595.0) - 1.0)


def mel_centres_hz(sample_rate: int, n_mels: int) -> np.ndarray:
  """Centre frequency (Hz) of each of `mel_filterbank`'s `n_mels` bands (fmin 0, fmax Nyquist)."""
  return _mel_points(0.0, sample_rate / 2, n_mels)[1:-1]


@functools.lru_cache(maxsize=32)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
  """HTK mel triangular filters, `[n_fft//2 + 1, n_mels]` float32 (numpy, cached)."""
  pts = _mel_points(fmin, fmax or sample_rate / 2, n_mels)
  freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
  lo, ce, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
  fb = np.maximum(0.0, np.minimum((freqs - lo) / (ce - lo), (hi - freqs) / (hi - ce)))
  return fb.T.astype(np.float32)


def log_mel(x: jax.Array, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80,
            floor: float = _EPS) -> jax.Array:
  """`[B, T]` -> natural-log mel magnitudes `[B, frames, n_mels]` (`log(mel + floor)`)."""
  mag = stft_magnitude(x, n_fft, hop)
  return jnp.log(mag @ jnp.asarray(mel_filterbank(sample_rate, n_fft, n_mels)) + floor)


def _safe_norm(x: jax.Array) -> jax.Array:
  """Frobenius norm over the whole batch, with a finite gradient at 0."""
  return jnp.sqrt(jnp.sum(x ** 2) + 1e-12)


def _high_weighted_mean(err: jax.Array, centres_hz: np.ndarray, high_weight: float) -> jax.Array:
  """Mean of `err` `[..., bins]` with the bins centred above `NARROWBAND_HZ` weighted `high_weight`
  against 1 below (a weighted mean: the term keeps the plain mean's scale; 1 = the plain mean)."""
  if high_weight == 1.0:
    return jnp.mean(err)
  w = np.where(centres_hz > NARROWBAND_HZ, high_weight, 1.0).astype(np.float32)
  return jnp.mean(err * w) / float(np.mean(w))


def multi_resolution_stft_loss(recon: jax.Array, target: jax.Array, resolutions=STFT_RESOLUTIONS,
                               log_floor: float = LOG_FLOOR, sample_rate: int = 16000,
                               high_weight: float = 1.0) -> jax.Array:
  """Mean over resolutions of spectral convergence (batch-level) + mean |log|X| - log|Y|| (Yamamoto et al.).

  `high_weight` weighs the log term's bins above `NARROWBAND_HZ` (a weighted mean, so the term's
  scale stays that of the plain mean); 1 = every bin alike, as in the paper.
  """
  total = 0.0
  for n_fft, hop in resolutions:
    m_r, m_t = stft_magnitude(recon, n_fft, hop), stft_magnitude(target, n_fft, hop)
    # Spectral convergence over the whole batch: per window it explodes on silent windows.
    sc = _safe_norm(m_t - m_r) / (_safe_norm(m_t) + 1e-3)
    err = jnp.abs(jnp.log(m_t + log_floor) - jnp.log(m_r + log_floor))
    total = total + sc + _high_weighted_mean(err, np.arange(n_fft // 2 + 1) * sample_rate / n_fft, high_weight)
  return total / len(resolutions)


def multi_resolution_mel_loss(recon: jax.Array, target: jax.Array, sample_rate: int,
                              resolutions=((512, 128, 64), (1024, 256, 80), (2048, 512, 128)),
                              log_floor: float = LOG_FLOOR, high_weight: float = 1.0) -> jax.Array:
  """Mean over resolutions of L1 between log-mel spectrograms; `high_weight` weighs the bands centred
  above `NARROWBAND_HZ` (a weighted mean, as in `multi_resolution_stft_loss`)."""
  total = 0.0
  for n_fft, hop, n_mels in resolutions:
    err = jnp.abs(log_mel(recon, sample_rate, n_fft, hop, n_mels, log_floor)
                  - log_mel(target, sample_rate, n_fft, hop, n_mels, log_floor))
    total = total + _high_weighted_mean(err, mel_centres_hz(sample_rate, n_mels), high_weight)
  return total / len(resolutions)


def _neighbours(x: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
  """(`x[i]`, `x[i - 1]`) for i >= 1 along `axis`."""
  n = x.shape[axis]
  return jax.lax.slice_in_dim(x, 1, n, axis=axis), jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)


def _unit_phasor_change(spec: jax.Array, axis: int) -> jax.Array:
  """`spec[i] * conj(spec[i - 1])` along `axis`, normalised to unit length (0 where either is 0):
  the phase's change between neighbouring hops (axis 1) or bins (axis 2) as a point on the circle."""
  a, b = _neighbours(spec, axis)
  z = a * jnp.conj(b)
  return z / (magnitude(z) + _EPS)


def phase_derivative_loss(recon: jax.Array, target: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """Phase-derivative loss on the `n_fft` / `hop` STFT: the distance `|z_r - z_t|` (2 |sin(d / 2)| for a
  phase error d: no wrapping) between the recon's and the target's phase change from hop to hop
  (instantaneous frequency) and from bin to bin (group delay), each a mean weighted by the target's
  |STFT|^0.5 (silent bins' phases are noise). A loss on the absolute phase would ask the decoder for
  the reference's time origin, which log-magnitude codes do not carry; the derivatives ask for a
  coherent phase (APNet, Ai & Ling 2023, trains its phase with such anti-wrapped derivative losses).
  """
  r, t = stft(recon, n_fft, hop), stft(target, n_fft, hop)
  w = jnp.sqrt(magnitude(t))
  total = 0.0
  for axis in (1, 2):
    d = magnitude(_unit_phasor_change(r, axis) - _unit_phasor_change(t, axis))
    wa = jnp.minimum(*_neighbours(w, axis))
    total = total + jnp.sum(wa * d) / (jnp.sum(wa) + _EPS)
  return total / 2


def audio_loss(recon: jax.Array, target: jax.Array, *, sample_rate: int, l1: float = 1.0,
               stft: float = 1.0, mel: float = 1.0, log_floor: float = LOG_FLOOR,
               stft_high_weight: float = 1.0, mel_high_weight: float = 1.0, phase: float = 0.0,
               phase_fft: tuple[int, int] = (320, 160)) -> tuple[jax.Array, dict]:
  """Weighted sum; returns (loss, parts). `[B, T]` float32 waveforms; `log_floor` > 0 is the
  magnitude floor of the log terms (STFT and mel); `stft_high_weight` / `mel_high_weight` weigh the
  log-STFT bins / mel bands above `NARROWBAND_HZ`; `phase` > 0 adds `phase_derivative_loss` on the
  `phase_fft` = (n_fft, hop) STFT (the decoder's own iSTFT grid)."""
  parts = {"l1": jnp.mean(jnp.abs(recon - target)),
           "mr_stft": multi_resolution_stft_loss(recon, target, log_floor=log_floor, sample_rate=sample_rate,
                                                 high_weight=stft_high_weight)}
  if mel:
    parts["mel"] = multi_resolution_mel_loss(recon, target, sample_rate, log_floor=log_floor,
                                             high_weight=mel_high_weight)
  loss = l1 * parts["l1"] + stft * parts["mr_stft"] + (mel * parts["mel"] if mel else 0.0)
  if phase:
    parts["phase"] = phase_derivative_loss(recon, target, *phase_fft)
    loss = loss + phase * parts["phase"]
  return loss, parts


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  g = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
  return (g / g.sum()).astype(np.float32)


def ssim(a: jax.Array, b: jax.Array, data_range: float = 2.0, win: int = 11) -> jax.Array:
  """Mean SSIM (Gaussian 11x11, sigma 1.5, 'valid'), per image over channels: `[..., H, W, C]` -> `[...]`."""
  lead = a.shape[:-3]
  h, w, c = a.shape[-3:]
  win = min(win, h, w)
  g = jnp.asarray(_gaussian_window(win, 1.5 * win / 11))
  a = a.reshape(-1, h, w, c).astype(jnp.float32)
  b = b.reshape(-1, h, w, c).astype(jnp.float32)

  def blur(x):  # separable, depthwise, valid
    x = jnp.moveaxis(x, -1, 1).reshape(-1, 1, h, w)
    x = jax.lax.conv_general_dilated(x, g.reshape(1, 1, win, 1), (1, 1), "VALID")
    x = jax.lax.conv_general_dilated(x, g.reshape(1, 1, 1, win), (1, 1), "VALID")
    return x

  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  mu_a, mu_b = blur(a), blur(b)
  s_aa = blur(a * a) - mu_a ** 2
  s_bb = blur(b * b) - mu_b ** 2
  s_ab = blur(a * b) - mu_a * mu_b
  m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
  return m.reshape(-1, c, *m.shape[-2:]).mean(axis=(1, 2, 3)).reshape(lead)


def contrast_weights(target: jax.Array, contrast: float) -> jax.Array:
  """Per-pixel loss weights `[..., H, W, 1]`: 1 + contrast * mean |pixel - the frame's mean colour|.

  `target` `[..., H, W, 3]` in [-1, 1]. A small object that stands out from its scene (a saturated
  shape held up to a muted wall, a black square, the eyes) weighs up to `1 + 2 * contrast`; flat
  background weighs ~1. Unweighted, a 2x2 latent grid spends its few bits on the large face and
  background and drops the object (the demo's colour questions).
  """
  mean = jnp.mean(target, axis=(-3, -2), keepdims=True)
  return 1.0 + contrast * jnp.mean(jnp.abs(target - mean), axis=-1, keepdims=True)


def video_loss(recon: jax.Array, target: jax.Array, *, l1: float = 1.0, l2: float = 1.0,
               ssim_weight: float = 0.1, contrast_weight: float = 0.0) -> tuple[jax.Array, dict]:
  """Weighted L1 + L2 (+ 1 - SSIM) on float frames in [-1, 1]; returns (loss, parts).

  `contrast_weight > 0` weighs L1 and L2 per pixel by `contrast_weights` (normalised by their mean,
  so the loss scale stays that of the unweighted mean); the `l1` / `l2` parts stay unweighted means.
  """
  err = recon - target
  parts = {"l1": jnp.mean(jnp.abs(err)), "l2": jnp.mean(err ** 2)}
  if contrast_weight:
    w = jax.lax.stop_gradient(contrast_weights(target, contrast_weight))
    loss = (l1 * jnp.mean(w * jnp.abs(err)) + l2 * jnp.mean(w * err ** 2)) / jnp.mean(w)
  else:
    loss = l1 * parts["l1"] + l2 * parts["l2"]
  if ssim_weight:
    parts["ssim"] = jnp.mean(ssim(recon, target, data_range=2.0))
    loss = loss + ssim_weight * (1.0 - parts["ssim"])
  return loss, parts
