"""Lip sync: does the avatar's mouth move with its own voice, and how far off is it?

The mouth signal is the mouth opening measured from the avatar's pixels in the
mouth region (`data_pipelines.avatar.mouth_opening_from_frames`), one value per
25 fps frame; the audio signal is the speech RMS envelope per 40 ms frame. Their
Pearson correlation is computed at every lag in `[-max_lag, max_lag]` frames
(SyncNet's offset search): the best lag is the A/V offset (positive = the video
is late: the mouth at frame t follows the sound of frame t - lag), the peak is
the correlation there, and peak - median over lags is the confidence.
"""

from __future__ import annotations

import numpy as np

from wan_streamer_jax.config import FRAMES_PER_UNIT


def lagged_correlation(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = 15) -> dict:
  """Correlation of `mouth[t]` with `envelope[t - lag]` for lag in `[-max_lag, max_lag]`.

  Args:
    mouth, envelope: float `[frames]` (the shorter length is used).
    max_lag: largest |lag| in frames.
  Returns:
    {"lags": [2L+1], "correlation": [2L+1] (NaN where a side is constant), "best_lag": int | None,
     "peak": float | None, "confidence": float | None}.
  """
  mouth, env = np.asarray(mouth, np.float64), np.asarray(envelope, np.float64)
  if mouth.ndim != 1 or env.ndim != 1:
    raise ValueError(f"lagged_correlation: expected 1-D signals, got {mouth.shape} and {env.shape}")
  n = min(mouth.shape[0], env.shape[0])
  if n <= 2 * max_lag + 2:
    raise ValueError(f"lagged_correlation: {n} frames is too short for lags of +-{max_lag}")
  mouth, env = mouth[:n], env[:n]
  lags = np.arange(-max_lag, max_lag + 1)
  corr = np.full(lags.shape, np.nan)
  for i, lag in enumerate(lags):
    a = mouth[max(lag, 0): n + min(lag, 0)]
    b = env[max(-lag, 0): n - max(lag, 0)]
    if a.std() > 0 and b.std() > 0:
      corr[i] = np.corrcoef(a, b)[0, 1]
  if np.all(np.isnan(corr)):
    return {"lags": lags.tolist(), "correlation": corr.tolist(), "best_lag": None, "peak": None,
            "confidence": None}
  k = int(np.nanargmax(corr))
  return {"lags": lags.tolist(), "correlation": corr.tolist(), "best_lag": int(lags[k]),
          "peak": float(corr[k]), "confidence": float(corr[k] - np.nanmedian(corr))}


def avatar_lip_sync(video: np.ndarray, audio: np.ndarray, samples_per_unit: int, max_lag: int = 15) -> dict:
  """`lagged_correlation` of an avatar clip: video uint8 `[frames, H, W, 3]`, audio float32 `[samples]`."""
  from data_pipelines import avatar, speech
  video, audio = np.asarray(video), np.asarray(audio, np.float32)
  if video.ndim != 4 or video.dtype != np.uint8:
    raise ValueError(f"avatar_lip_sync: expected uint8 video [frames, H, W, 3], got {video.dtype} {video.shape}")
  env = speech.frame_envelope(audio, samples_per_unit // FRAMES_PER_UNIT)
  return lagged_correlation(avatar.mouth_opening_from_frames(video), env, max_lag)
