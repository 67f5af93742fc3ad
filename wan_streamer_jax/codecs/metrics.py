"""Codec evaluation metrics (numpy in, Python floats out; computed on host).

Audio: SI-SNR (dB), log-mel distance (mean |ln mel_a - ln mel_b|, 80 mels,
1024/256 STFT), STOI (`pystoi`, 0..1; `stoi_bands` splits it by third-octave band), PESQ
(ITU-T P.862 via the `pesq` package: narrow-band MOS-LQO 1.0..4.5 at 8 or 16 kHz, wide-band
P.862.2 1.0..4.6 at 16 kHz). Video: PSNR (dB, peak 255 on uint8), SSIM (Gaussian 11x11).
Codebook usage: per-quantiser perplexity `exp(entropy)` of the code histogram (max = codebook
size) and the fraction of codes used.
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


def log_mel_distance(est: np.ndarray, ref: np.ndarray, sample_rate: int, n_fft: int = 1024, hop: int = 256,
                     n_mels: int = 80) -> float:
  """Mean absolute difference of natural-log mel spectrograms (80 mels, n_fft 1024, hop 256).

  Numpy (no per-length compile); the same spectrogram as `losses.log_mel` (Hann frames fully
  inside the signal, |STFT| with eps 1e-5, HTK mels 0..sample_rate/2, log(mel + 1e-5)).
  """
  from wan_streamer_jax.codecs.losses import _EPS, mel_filterbank
  fb = mel_filterbank(sample_rate, n_fft, n_mels).astype(np.float64)
  window = np.hanning(n_fft + 1)[:-1]

  def spec(x):
    x = np.atleast_2d(np.asarray(x, np.float64))
    if x.shape[-1] < n_fft:
      x = np.pad(x, ((0, 0), (0, n_fft - x.shape[-1])))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop] * window
    mag = np.sqrt(np.abs(np.fft.rfft(frames, axis=-1)) ** 2 + _EPS ** 2)
    return np.log(mag @ fb + _EPS)

  return float(np.mean(np.abs(spec(est) - spec(ref))))


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


def _pystoi_module():
  import sys
  import pystoi.stoi  # noqa: F401  (the package re-exports the function under the module's name)
  return sys.modules["pystoi.stoi"]


def stoi_band_centres_hz() -> list[float]:
  """Centre frequencies (Hz) of STOI's 15 third-octave bands, 150 Hz .. ~3.8 kHz."""
  return [float(c) for c in _pystoi_module().CF]


def stoi_bands(est: np.ndarray, ref: np.ndarray, sample_rate: int) -> tuple[list[float], np.ndarray]:
  """STOI split by third-octave band: (centre frequencies in Hz `[15]`, mean correlation per band `[15]`).

  The same computation as `pystoi`'s STOI (its constants and helpers: 10 kHz, silent frames of
  the reference dropped, 30-frame segments, clipping at -15 dB SDR), stopped before the mean over
  bands: the bands' mean is `stoi(est, ref)`. `[T]` float signals. Says *where* intelligibility
  is lost (which formant region), which the single figure does not.
  """
  from pystoi import utils
  S = _pystoi_module()
  x, y = np.asarray(ref, np.float64), np.asarray(est, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"stoi_bands: expected two [T] signals of one length, got {x.shape} and {y.shape}")
  if sample_rate != S.FS:
    x, y = utils.resample_oct(x, S.FS, sample_rate), utils.resample_oct(y, S.FS, sample_rate)
  x, y = utils.remove_silent_frames(x, y, S.DYN_RANGE, S.N_FRAME, S.N_FRAME // 2)
  bands = lambda z: np.sqrt(S.OBM @ np.abs(utils.stft(z, S.N_FRAME, S.NFFT, overlap=2).T) ** 2)
  xt, yt = bands(x), bands(y)
  if xt.shape[1] < S.N:
    return stoi_band_centres_hz(), np.full(len(S.CF), np.nan)
  seg = lambda t: np.stack([t[:, m - S.N:m] for m in range(S.N, t.shape[1] + 1)])  # [segments, bands, N]
  xs, ys = seg(xt), seg(yt)
  norm = lambda a: np.linalg.norm(a, axis=2, keepdims=True)
  ys = np.minimum(ys * norm(xs) / (norm(ys) + utils.EPS), xs * (1 + 10 ** (-S.BETA / 20)))
  xs, ys = xs - xs.mean(2, keepdims=True), ys - ys.mean(2, keepdims=True)
  corr = np.sum(xs / (norm(xs) + utils.EPS) * ys / (norm(ys) + utils.EPS), axis=2)  # [segments, bands]
  return stoi_band_centres_hz(), corr.mean(axis=0)


def pesq(est: np.ndarray, ref: np.ndarray, sample_rate: int, mode: str = "wb") -> float:
  """PESQ MOS-LQO of `est` against `ref` (`[T]` or `[B, T]` float in [-1, 1]), mean over the batch.

  `mode` "nb" (P.862, `sample_rate` 8000 or 16000) or "wb" (P.862.2, 16000 only; other rates
  are resampled to 16 kHz). Windows PESQ finds no utterance in count as missing (NaN if all).
  """
  from pesq import NoUtterancesError, pesq as _pesq
  from scipy import signal
  if mode not in ("nb", "wb"):
    raise ValueError(f"pesq mode: expected nb|wb, got {mode!r}")
  est = np.atleast_2d(np.asarray(est, np.float64))
  ref = np.atleast_2d(np.asarray(ref, np.float64))
  rate = sample_rate
  if (mode == "wb" and rate != 16000) or rate not in (8000, 16000):
    est = signal.resample_poly(est, 16000, rate, axis=-1)
    ref = signal.resample_poly(ref, 16000, rate, axis=-1)
    rate = 16000
  vals = []
  for e, r in zip(est, ref):
    if np.max(np.abs(r)) < 1e-6:
      continue
    try:
      vals.append(float(_pesq(rate, r, e, mode)))
    except NoUtterancesError:
      continue
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


def speech_scores(est: np.ndarray, ref: np.ndarray, sample_rate: int) -> dict:
  """The speech-codec figures of one `[T]` pair: STOI, PESQ-NB, PESQ-WB, log-mel distance, SI-SNR."""
  return {"stoi": stoi(est, ref, sample_rate), "pesq_nb": pesq(est, ref, sample_rate, "nb"),
          "pesq_wb": pesq(est, ref, sample_rate, "wb"),
          "log_mel_distance": log_mel_distance(est, ref, sample_rate), "si_snr_db": si_snr(est, ref)}
