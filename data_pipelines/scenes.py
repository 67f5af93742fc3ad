"""The user's camera: a simple scene at 25 fps, rendered with numpy.

A background (two-colour gradient and a table edge), the user's face whose
mouth follows the user's speech envelope (with a slight head sway), and —
when the user holds it up — a coloured shape (circle, square or triangle).
Frames where the camera is off are black; the per-unit `camera_on` flag (not
the pixels) is what turns the `video_in` stream into MISSING tokens.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines import render

# Saturated, mutually distinct colours the user can show; named in answers.
SHAPE_COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 220), "yellow": (240, 220, 30),
    "purple": (140, 40, 180), "orange": (250, 140, 20), "white": (250, 250, 250), "black": (10, 10, 10),
}
SHAPE_KINDS = ("circle", "square", "triangle")
# Where the user holds the shape: centre (fractions of width / height) and radius (of min(H, W)).
SHAPE_X, SHAPE_Y, SHAPE_R = 0.72, 0.55, 0.15
SKIN_TONES = ((236, 200, 170), (200, 150, 110), (150, 100, 70), (95, 65, 45))
SHIRTS = ((120, 120, 130), (60, 90, 60), (110, 70, 60), (70, 70, 110))


@dataclasses.dataclass(frozen=True)
class SceneStyle:
  """Per-conversation look of the user's camera (drawn once from the conversation's RNG)."""

  wall_top: tuple
  wall_bottom: tuple
  table: tuple
  skin: tuple
  shirt: tuple
  face_x: float  # head centre, fraction of width
  sway_phase: float

  @classmethod
  def sample(cls, rng: np.random.Generator) -> "SceneStyle":
    def muted():  # low-saturation mid-grey so every shape colour stands out
      base = rng.uniform(90, 170)
      return tuple(float(np.clip(base + rng.uniform(-18, 18), 0, 255)) for _ in range(3))
    top = muted()
    return cls(wall_top=top, wall_bottom=tuple(0.85 * c for c in top), table=muted(),
               skin=SKIN_TONES[rng.integers(len(SKIN_TONES))], shirt=SHIRTS[rng.integers(len(SHIRTS))],
               face_x=float(rng.uniform(0.26, 0.36)), sway_phase=float(rng.uniform(0, 2 * np.pi)))


def shape_core(height: int, width: int) -> np.ndarray:
  """bool `[H, W]`: pixels inside every shape kind wherever it sways (a disk at the shape's centre)."""
  yy, xx = np.mgrid[:height, :width]
  r = 0.4 * SHAPE_R * min(height, width)
  return (xx + 0.5 - SHAPE_X * width) ** 2 + (yy + 0.5 - SHAPE_Y * height) ** 2 <= r ** 2


_PALETTE = np.array(list(SHAPE_COLOURS.values()), np.float32)


def nearest_shape_colour(rgb) -> str:
  """The SHAPE_COLOURS name nearest to an RGB triple (0..255)."""
  return list(SHAPE_COLOURS)[int(np.argmin(((_PALETTE - np.asarray(rgb, np.float32)) ** 2).sum(-1)))]


def render_user_video(style: SceneStyle, mouth_open: np.ndarray, shape_visible: np.ndarray,
                      shape_colour: str | None, shape_kind: str | None, camera_on: np.ndarray,
                      height: int, width: int) -> np.ndarray:
  """Frames uint8 `[frames, H, W, 3]`.

  Args:
    style: the scene's look.
    mouth_open: float `[frames]` in [0, 1] (from the user's speech envelope).
    shape_visible: bool `[frames]`; the shape is drawn where True.
    shape_colour, shape_kind: a key of SHAPE_COLOURS and one of SHAPE_KINDS (None: no shape).
    camera_on: bool `[frames]`; black frames where False.
    height, width: frame size.
  """
  F, H, W = int(mouth_open.shape[0]), height, width
  t = np.arange(F, dtype=np.float32)
  static = render.vertical_gradient(1, H, W, style.wall_top, style.wall_bottom)
  render.paint(static, render.rectangle(1, H, W, 0, 0.86 * H, W, H), style.table)
  canvas = np.repeat(static, F, axis=0)
  sway = 0.015 * W * np.sin(2 * np.pi * t / 75.0 + style.sway_phase)
  cx = style.face_x * W + sway
  cy = 0.42 * H
  render.paint(canvas, render.ellipse(F, H, W, cx, 0.98 * H, 0.22 * W, 0.2 * H), style.shirt)
  render.paint(canvas, render.ellipse(F, H, W, cx, cy, 0.17 * W, 0.22 * H), style.skin)
  for side in (-1, 1):
    render.paint(canvas, render.ellipse(F, H, W, cx + side * 0.07 * W, cy - 0.05 * H, 0.028 * W, 0.028 * H),
                 (25, 25, 30))
  ry = (0.01 + 0.06 * np.clip(mouth_open, 0, 1)) * H
  render.paint(canvas, render.ellipse(F, H, W, cx, cy + 0.11 * H, 0.08 * W, ry), (80, 25, 30))
  if shape_colour is not None and np.any(shape_visible):
    colour = SHAPE_COLOURS[shape_colour]
    vis = np.asarray(shape_visible, bool)
    sx = SHAPE_X * W + 0.01 * W * np.sin(2 * np.pi * t / 40.0)
    sy, r = SHAPE_Y * H, SHAPE_R * min(H, W)
    if shape_kind == "circle":
      cov = render.ellipse(F, H, W, sx, sy, r, r)
    elif shape_kind == "square":
      cov = render.rectangle(F, H, W, sx - r, sy - r, sx + r, sy + r)
    elif shape_kind == "triangle":
      cov = render.triangle(F, H, W, sx, sy, r * 1.15)
    else:
      raise ValueError(f"unknown shape kind {shape_kind!r}; expected one of {SHAPE_KINDS}")
    render.paint(canvas, cov.times(vis), colour)
  canvas[~np.asarray(camera_on, bool)] = 0.0
  return render.to_uint8(canvas)
