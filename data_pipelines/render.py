"""Anti-aliased numpy drawing of simple shapes on batches of frames.

Coordinates are in pixels, pixel `i` covering `[i, i + 1)`. A clip is a
float32 canvas `[frames, H, W, 3]` (values 0..255); shapes take per-frame
parameters (arrays `[frames]` or scalars) and return a `Coverage` restricted
to their bounding box over the clip, so painting costs the shape's area, not
the frame's.

Coverage is exact along y: each column (sampled at its centre) is an interval
`[y0, y1]` and a pixel is covered by the length of its overlap with it. The
drawn area is therefore linear in a shape's height — what makes the avatar's
mouth opening measurable from pixels even at 16x16.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Coverage:
  """alpha float32 `[frames, h, w]` in [0, 1] over the window `[ys, xs]` of the frame."""

  alpha: np.ndarray
  ys: slice
  xs: slice

  def times(self, per_frame) -> "Coverage":
    """Scales coverage per frame (e.g. a visibility mask `[frames]`)."""
    return Coverage(self.alpha * np.asarray(per_frame, np.float32)[:, None, None], self.ys, self.xs)


def _col(x, frames: int) -> np.ndarray:
  """Scalar or `[frames]` -> float32 `[frames, 1]`."""
  return np.broadcast_to(np.asarray(x, np.float32), (frames,)).reshape(frames, 1)


def _window(lo, hi, size: int) -> slice:
  a = int(np.clip(np.floor(np.min(lo)), 0, size))
  b = int(np.clip(np.ceil(np.max(hi)), a, size))
  return slice(a, b)


def _span_coverage(y0: np.ndarray, y1: np.ndarray, ys: slice) -> np.ndarray:
  """Coverage `[frames, len(ys), w]` of per-column intervals `y0, y1`: `[frames, w]`."""
  rows = np.arange(ys.start, ys.stop, dtype=np.float32)[None, :, None]
  top = np.maximum(y0[:, None, :], rows)
  bottom = np.minimum(y1[:, None, :], rows + 1.0)
  return np.clip(bottom - top, 0.0, 1.0)


def _x_centres(xs: slice) -> np.ndarray:
  return np.arange(xs.start, xs.stop, dtype=np.float32)[None, :] + 0.5


def ellipse(frames: int, height: int, width: int, cx, cy, rx, ry) -> Coverage:
  """Axis-aligned ellipses with per-frame centre and radii."""
  cx, cy, rx, ry = (_col(v, frames) for v in (cx, cy, rx, ry))
  ys, xs = _window(cy - ry, cy + ry, height), _window(cx - rx, cx + rx, width)
  dx = (_x_centres(xs) - cx) / np.maximum(rx, 1e-6)
  h = ry * np.sqrt(np.clip(1.0 - dx * dx, 0.0, None))
  return Coverage(_span_coverage(cy - h, cy + h, ys), ys, xs)


def rectangle(frames: int, height: int, width: int, x0, y0, x1, y1) -> Coverage:
  """Axis-aligned rectangles, anti-aliased on all edges."""
  x0, y0, x1, y1 = (_col(v, frames) for v in (x0, y0, x1, y1))
  ys, xs = _window(y0, y1, height), _window(x0, x1, width)
  cols = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :]
  xcov = np.clip(np.minimum(x1, cols + 1.0) - np.maximum(x0, cols), 0.0, 1.0)  # [F, w]
  ycov = _span_coverage(np.broadcast_to(y0, xcov.shape), np.broadcast_to(y1, xcov.shape), ys)
  return Coverage(ycov * xcov[:, None, :], ys, xs)


def triangle(frames: int, height: int, width: int, cx, cy, r) -> Coverage:
  """Upward isosceles triangles inscribed in the square of half-side `r` around `(cx, cy)`."""
  cx, cy, r = (_col(v, frames) for v in (cx, cy, r))
  ys, xs = _window(cy - r, cy + r, height), _window(cx - r, cx + r, width)
  dx = np.abs(_x_centres(xs) - cx) / np.maximum(r, 1e-6)  # 0 at the apex column, 1 at the corners
  bottom = np.broadcast_to(cy + r, dx.shape)
  top = np.where(dx <= 1.0, cy - r + 2.0 * r * dx, bottom)
  return Coverage(_span_coverage(top, bottom, ys), ys, xs)


def paint(canvas: np.ndarray, cov: Coverage, colour) -> np.ndarray:
  """In place: `canvas[:, ys, xs] = mix(canvas, colour, alpha)`; colour `[3]`."""
  if cov.alpha.size == 0:
    return canvas
  region = canvas[:, cov.ys, cov.xs, :]
  a = cov.alpha[..., None]
  region += a * (np.asarray(colour, np.float32) - region)
  return canvas


def vertical_gradient(frames: int, height: int, width: int, top, bottom) -> np.ndarray:
  """float32 canvas `[frames, H, W, 3]` blending colour `top` (row 0) to `bottom` (last row)."""
  t = (np.arange(height, dtype=np.float32) + 0.5) / height
  rows = (1.0 - t)[:, None] * np.asarray(top, np.float32) + t[:, None] * np.asarray(bottom, np.float32)
  return np.ascontiguousarray(np.broadcast_to(rows[None, :, None, :], (frames, height, width, 3)))


def to_uint8(canvas: np.ndarray) -> np.ndarray:
  return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
