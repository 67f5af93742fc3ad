"""A PNG contact sheet of one conversation: frames per unit with the aligned text and audio levels.

One column per unit (160 ms): the user's frame, the model's frame, the unit's
model text and user text slots (`_` word end, `|` end of turn, `.` pad,
`?` missing), and two level bars (user / model RMS). Unit numbers every 4
columns; turns and answers are listed in the header. Also: `audio_stats`, the
numbers to "listen" with when no speaker is at hand.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data_pipelines import avatar, speech, text_slots
from wan_streamer_jax.config import FRAMES_PER_UNIT

CELL = 64  # frame size in the sheet
PAD = 4


def _font():
  try:
    return ImageFont.load_default(size=11)
  except TypeError:  # Pillow < 10.1
    return ImageFont.load_default()


def _as_str(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


def audio_stats(audio: np.ndarray, sample_rate: int) -> dict:
  """Loudness figures of one track: rms, peak, active fraction (10 ms frames over -40 dBFS), seconds."""
  env = speech.frame_envelope(np.asarray(audio, np.float32), max(1, sample_rate // 100))
  return {"seconds": round(audio.shape[0] / sample_rate, 3), "rms": round(float(np.sqrt(np.mean(audio ** 2))), 4),
          "peak": round(float(np.abs(audio).max()), 4), "active_fraction": round(float(np.mean(env > 0.01)), 3)}


def lip_sync_correlation(model_video: np.ndarray, model_audio: np.ndarray, samples_per_unit: int) -> float:
  """Pearson correlation of the avatar's mouth area (from pixels) and the model speech RMS per frame."""
  env = speech.frame_envelope(model_audio, samples_per_unit // FRAMES_PER_UNIT)[: model_video.shape[0]]
  mouth = avatar.mouth_opening_from_frames(model_video)
  if env.std() == 0 or mouth.std() == 0:
    return float("nan")
  return float(np.corrcoef(mouth, env)[0, 1])


def contact_sheet(ex: dict, units_per_row: int = 16, max_units: int = 64) -> Image.Image:
  """Renders the sheet for a conversation dict (corpus / TFDS example)."""
  font = _font()
  n = min(int(ex["num_units"]), max_units)
  spu = int(np.asarray(ex["user_audio"]).shape[0] // int(ex["num_units"]))
  rows = -(-n // units_per_row)
  meta = json.loads(_as_str(ex["metadata"])) if ex.get("metadata") else {}
  header = [f"{_as_str(ex['conversation_id'])}  task={_as_str(ex['task'])}  "
            f"answer={_as_str(ex['expected_answer'])!r} @unit {int(ex['answer_unit'])}  "
            f"camera={meta.get('camera', '?')}  units={int(ex['num_units'])} (showing {n})"]
  for t in meta.get("turns", [])[:10]:
    header.append(f"  {t['speaker']:>5} {t['kind']:<11} units {t['start_unit']:>3}-{t['end_unit']:<3} "
                  f"{'(cut) ' if t['interrupted'] else ''}{t['text']}")
  head_h = 14 * len(header) + PAD
  text_h, bar_h = 28, 18
  row_h = 2 * CELL + text_h + bar_h + 16
  W = PAD + units_per_row * (CELL + PAD)
  sheet = Image.new("RGB", (W, head_h + rows * row_h + PAD), (250, 250, 250))
  draw = ImageDraw.Draw(sheet)
  for i, line in enumerate(header):
    draw.text((PAD, PAD + 14 * i), line, fill=(0, 0, 0), font=font)
  uv, mv = np.asarray(ex["user_video"]), np.asarray(ex["model_video"])
  ut, mt = text_slots.unit_strings(ex["user_text"]), text_slots.unit_strings(ex["model_text"])
  ua, ma = np.asarray(ex["user_audio"]), np.asarray(ex["model_audio"])
  camera = np.asarray(ex["user_camera_on"])
  for u in range(n):
    r, c = divmod(u, units_per_row)
    x, y = PAD + c * (CELL + PAD), head_h + r * row_h
    draw.text((x, y), str(u) if u % 4 == 0 else "", fill=(90, 90, 90), font=font)
    y += 12
    for frame, on in ((uv[u * FRAMES_PER_UNIT], camera[u]), (mv[u * FRAMES_PER_UNIT], True)):
      img = Image.fromarray(frame).resize((CELL, CELL), Image.NEAREST)
      sheet.paste(img, (x, y))
      if not on:
        draw.line((x, y, x + CELL, y + CELL), fill=(200, 0, 0))
      y += CELL
    draw.text((x, y + 1), mt[u], fill=(0, 0, 160), font=font)
    draw.text((x, y + 14), ut[u], fill=(0, 110, 0), font=font)
    y += text_h
    for k, audio in enumerate((ua, ma)):
      rms = float(np.sqrt(np.mean(audio[u * spu:(u + 1) * spu] ** 2)))
      draw.rectangle((x, y + 8 * k, x + int(min(1.0, rms / 0.25) * CELL), y + 8 * k + 6),
                     fill=((0, 140, 0), (0, 0, 190))[k])
  return sheet
