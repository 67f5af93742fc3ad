"""Codec evaluation metrics (numpy in, Python floats out; computed on host).

Audio: SI-SNR (dB), log-mel distance (mean |ln mel_a - ln mel_b|, 80 mels,
1024/256 STFT), STOI (`pystoi`, 0..1). Video: PSNR (dB, peak 255 on uint8),
SSIM (Gaussian 11x11). Codebook usage: per-quantiser perplexity
`exp(entropy)` of the code histogram (max = codebook size) and the fraction of
codes used.
"""

from __future__ import annotations

import numpy as np


def si_snr(est: np.ndarray, ref: np.ndarray, eps: float = 1e-8) -> float:
  """Scale-invariant SNR in dB, mean over the batch. `[B, T]` or `[T]`."""
  est = np.atleast_2d(np.asarray(est, np.float64))
  ref = np.atleast_2d(np.asarray(ref, np.float64))
  est = est - est.mean(-1, keepdims=True)
  ref = ref - ref.mean(-1, keepdims=True)
  proj = (np.sum(est * ref, -1, keepdims=True) / (np.sum(ref * ref, -1, keepdims=True) + eps)) * ref
  noise = est - proj
  return float(np.mean(10 * np.log10((np.sum(proj ** 2, -1) + eps) / (np.sum(noise ** 2, -1) + eps))))


def log_mel_distance(est: np.ndarray, ref: np.ndarray, sample_rate: int) -> float:
  """Mean absolute difference of natural-log mel spectrograms (80 mels, n_fft 1024, hop 256)."""
  from wan_streamer_jax.codecs.losses import log_mel
  import jax.numpy as jnp
  a = log_mel(jnp.atleast_2d(jnp.asarray(est, jnp.float32)), sample_rate)
  b = log_mel(jnp.atleast_2d(jnp.asarray(ref, jnp.float32)), sample_rate)
  return float(jnp.mean(jnp.abs(a - b)))


def stoi(est: np.ndarray, ref: np.ndarray, sample_rate: int) -> float:
  """Short-time objective intelligibility (Taal et al. 2011) via `pystoi`, mean over the batch."""
  from pystoi import stoi as _stoi
  est = np.atleast_2d(np.asarray(est, np.float64))
  ref = np.atleast_2d(np.asarray(ref, np.float64))
  vals = []
  for e, r in zip(est, ref):
    if np.max(np.abs(r)) < 1e-6:  # silent reference: STOI undefined
      continue
    vals.append(_stoi(r, e, sample_rate, extended=False))
  return float(np.mean(vals)) if vals else float("nan")


def psnr(est: np.ndarray, ref: np.ndarray) -> float:
  """PSNR in dB (peak 255) over all pixels of uint8 (or 0..255 float) frames; one MSE over the batch."""
  mse = np.mean((np.asarray(est, np.float64) - np.asarray(ref, np.float64)) ** 2)
  return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def ssim(est: np.ndarray, ref: np.ndarray) -> float:
  """Mean SSIM of uint8 frames `[..., H, W, 3]`."""
  from wan_streamer_jax.codecs.losses import ssim as _ssim
  import jax.numpy as jnp
  return float(jnp.mean(_ssim(jnp.asarray(est, jnp.float32), jnp.asarray(ref, jnp.float32), data_range=255.0)))


def codebook_usage(codes: np.ndarray, codebook_size: int) -> dict:
  """codes `[..., Q]` -> {perplexity: [Q], used_fraction: [Q]} (video: pass `codes[..., None]`).

  Ids outside `[0, codebook_size)` (MISSING) are ignored.
  """
  codes = np.asarray(codes)
  flat = codes.reshape(-1, codes.shape[-1])
  ppl, used = [], []
  for q in range(flat.shape[1]):
    col = flat[:, q]
    col = col[(col >= 0) & (col < codebook_size)]
    hist = np.bincount(col, minlength=codebook_size)[:codebook_size].astype(np.float64)
    p = hist / max(hist.sum(), 1)
    nz = p[p > 0]
    ppl.append(float(np.exp(-np.sum(nz * np.log(nz)))))
    used.append(float(np.mean(hist > 0)))
  return {"perplexity": ppl, "used_fraction": used}
