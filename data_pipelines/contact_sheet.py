"""A PNG contact sheet of one conversation: frames per unit with the aligned text and audio levels.

One column per unit (160 ms): the user's frame, the model's frame, the unit's
model text and user text slots (`_` word end, `|` end of turn, `.` pad,
`?` missing), and two level bars (user / model RMS). Unit numbers every 4
columns; turns and answers are listed in the header, and a legend under it
explains the marks. Also: `audio_stats`, the numbers to "listen" with when no
speaker is at hand.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data_pipelines import avatar, speech, text_slots
from wan_streamer_jax.config import FRAMES_PER_UNIT

CELL = 64  # frame size in the sheet
PAD = 4
USER_COLOUR, MODEL_COLOUR = (0, 140, 0), (0, 0, 190)  # bars; the text slots use darker shades
MODEL_TEXT_COLOUR, USER_TEXT_COLOUR = (0, 0, 160), (0, 110, 0)
BAR_FULL_RMS = 0.25  # a bar spanning the whole cell
LEGEND = (
    ("Each column is one 160 ms unit: top the user's camera (red diagonal: camera off), below it the model's avatar.",
     (0, 0, 0)),
    ("Blue text: the model's text slots of the unit; green text: the user's typed-text slots. Letters are UTF-8 "
     "bytes, _ = WORD_END, | = END_OF_TURN,", (0, 0, 0)),
    ("  . = PAD (nothing to write in that slot this unit), ? = MISSING (no such stream: ???????? = the user has no "
     "text box in this conversation).", (0, 0, 0)),
    (f"Bars: loudness (RMS) of the unit's audio, green = user, blue = model; full cell width = RMS {BAR_FULL_RMS}.",
     (0, 0, 0)),
)


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


def sheet_header(ex: dict, shown_units: int) -> list[tuple[str, tuple[int, int, int]]]:
  """The sheet's header lines with their colours: the conversation, its turns (up to 10), the legend."""
  meta = json.loads(_as_str(ex["metadata"])) if ex.get("metadata") else {}
  answer = _as_str(ex["expected_answer"])
  answer = f'first answer "{answer}" spoken from unit {int(ex["answer_unit"])}' if answer else "no expected answer"
  header = [(f"{_as_str(ex['conversation_id'])}   task: {_as_str(ex['task'])}   {answer}   "
             f"camera: {meta.get('camera', '?')}   units: {int(ex['num_units'])} (showing {shown_units})", (0, 0, 0))]
  for t in meta.get("turns", [])[:10]:
    header.append((f"    {t['speaker']} {t['kind']}, units {t['start_unit']}-{t['end_unit']}"
                   f"{' (cut off)' if t['interrupted'] else ''}: {t['text']}",
                   USER_TEXT_COLOUR if t["speaker"] == "user" else MODEL_TEXT_COLOUR))
  header += LEGEND
  return header


def contact_sheet(ex: dict, units_per_row: int = 16, max_units: int = 64) -> Image.Image:
  """Renders the sheet for a conversation dict (corpus / TFDS example)."""
  font = _font()
  n = min(int(ex["num_units"]), max_units)
  spu = int(np.asarray(ex["user_audio"]).shape[0] // int(ex["num_units"]))
  rows = -(-n // units_per_row)
  header = sheet_header(ex, n)
  head_h = 14 * len(header) + PAD
  text_h, bar_h = 28, 18
  row_h = 2 * CELL + text_h + bar_h + 16
  W = PAD + units_per_row * (CELL + PAD)
  sheet = Image.new("RGB", (W, head_h + rows * row_h + PAD), (250, 250, 250))
  draw = ImageDraw.Draw(sheet)
  for i, (line, colour) in enumerate(header):
    draw.text((PAD, PAD + 14 * i), line, fill=colour, font=font)
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
    draw.text((x, y + 1), mt[u], fill=MODEL_TEXT_COLOUR, font=font)
    draw.text((x, y + 14), ut[u], fill=USER_TEXT_COLOUR, font=font)
    y += text_h
    for k, audio in enumerate((ua, ma)):
      rms = float(np.sqrt(np.mean(audio[u * spu:(u + 1) * spu] ** 2)))
      draw.rectangle((x, y + 8 * k, x + int(min(1.0, rms / BAR_FULL_RMS) * CELL), y + 8 * k + 6),
                     fill=(USER_COLOUR, MODEL_COLOUR)[k])
  return sheet
