"""The model's rendered avatar: the lip-sync target of the `video_out` stream.

A static head on a studio background, eyes that blink, and a mouth whose
opening follows the model's own speech envelope frame by frame (25 fps, the
RMS of each 40 ms of model audio). Everything is a fixed geometry in
fractions of the frame, so `mouth_opening_from_frames` can measure the
opening back from pixels (used by tests and `inspect_data`).
"""

from __future__ import annotations

import numpy as np

from data_pipelines import render

BACKGROUND_TOP = (70, 86, 110)
BACKGROUND_BOTTOM = (40, 48, 64)
SKIN = (224, 182, 150)
HAIR = (70, 45, 30)
EYE = (30, 30, 40)
MOUTH = (90, 20, 35)
SHIRT = (40, 110, 160)

# Geometry in fractions of (width, height).
HEAD_C, HEAD_R = (0.5, 0.47), (0.27, 0.33)
EYE_Y, EYE_DX, EYE_R = 0.39, 0.11, (0.05, 0.045)
MOUTH_C, MOUTH_RX = (0.5, 0.64), 0.13
MOUTH_RY_CLOSED, MOUTH_RY_OPEN = 0.012, 0.10  # half-height of the mouth at opening 0 and 1
ENVELOPE_REF = 0.20  # model speech RMS that opens the mouth fully (utterances peak at speech.PEAK)


def mouth_opening(envelope: np.ndarray) -> np.ndarray:
  """Speech RMS per frame `[frames]` -> mouth opening in [0, 1] (linear, clipped)."""
  return np.clip(np.asarray(envelope, np.float32) / ENVELOPE_REF, 0.0, 1.0)


def blink_schedule(rng: np.random.Generator, frames: int) -> np.ndarray:
  """Eye openness float32 `[frames]`: 1 open, blinks of 3 frames every 2-5 s."""
  openness = np.ones(frames, np.float32)
  f = int(rng.integers(10, 60))
  while f < frames:
    openness[f:f + 3] = (0.35, 0.05, 0.35)[:max(0, min(3, frames - f))]
    f += int(rng.integers(50, 125))
  return openness


def render_avatar(mouth_open: np.ndarray, eye_open: np.ndarray, height: int, width: int) -> np.ndarray:
  """Frames uint8 `[frames, H, W, 3]` of the avatar; inputs float `[frames]` in [0, 1]."""
  frames = int(mouth_open.shape[0])
  H, W = height, width
  static = render.vertical_gradient(1, H, W, BACKGROUND_TOP, BACKGROUND_BOTTOM)
  render.paint(static, render.ellipse(1, H, W, 0.5 * W, 1.02 * H, 0.42 * W, 0.2 * H), SHIRT)
  hc, hr = (HEAD_C[0] * W, HEAD_C[1] * H), (HEAD_R[0] * W, HEAD_R[1] * H)
  render.paint(static, render.ellipse(1, H, W, hc[0], hc[1] - 0.06 * H, hr[0] * 1.05, hr[1]), HAIR)
  render.paint(static, render.ellipse(1, H, W, hc[0], hc[1] + 0.03 * H, hr[0], hr[1] * 0.93), SKIN)
  canvas = np.repeat(static, frames, axis=0)
  eye_ry = EYE_R[1] * H * np.clip(eye_open, 0.02, 1.0)
  for side in (-1, 1):
    cov = render.ellipse(frames, H, W, (0.5 + side * EYE_DX) * W, EYE_Y * H, EYE_R[0] * W, eye_ry)
    render.paint(canvas, cov, EYE)
  ry = (MOUTH_RY_CLOSED + (MOUTH_RY_OPEN - MOUTH_RY_CLOSED) * np.clip(mouth_open, 0, 1)) * H
  render.paint(canvas, render.ellipse(frames, H, W, MOUTH_C[0] * W, MOUTH_C[1] * H, MOUTH_RX * W, ry), MOUTH)
  return render.to_uint8(canvas)


def _mouth_box(height: int, width: int) -> tuple[slice, slice]:
  cy, cx = MOUTH_C[1] * height, MOUTH_C[0] * width
  ry, rx = (MOUTH_RY_OPEN + 0.02) * height, (MOUTH_RX + 0.02) * width
  return (slice(max(0, int(np.floor(cy - ry))), int(np.ceil(cy + ry))),
          slice(max(0, int(np.floor(cx - rx))), int(np.ceil(cx + rx))))


def mouth_opening_from_frames(frames: np.ndarray) -> np.ndarray:
  """Measures the mouth area from avatar frames `[F, H, W, 3]` uint8 -> float32 `[F]` (pixel units).

  The area covered by the mouth colour inside the mouth box, from the skin/mouth
  colour mix of each pixel; linear in the drawn opening.
  """
  ys, xs = _mouth_box(frames.shape[1], frames.shape[2])
  box = frames[:, ys, xs, :].astype(np.float32)
  skin, mouth = np.asarray(SKIN, np.float32), np.asarray(MOUTH, np.float32)
  d = skin - mouth
  frac = np.clip(((skin - box) @ d) / float(d @ d), 0.0, 1.0)
  return frac.sum(axis=(1, 2)).astype(np.float32)
