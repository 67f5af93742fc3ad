"""What a streamed conversation leaves behind: stereo WAV, side-by-side MP4, transcript, latency plot.

    rec = StreamRecorder(recording, slot=0)
    ... rec.add(unit, outputs) after every step ...
    files = rec.write(out_dir, report)     # report: driver.LatencyReport

Files (prefix = the recording's name):
- `NAME_stereo.wav`: 16-bit PCM, user on the left channel, the model on the right,
  `units * samples_per_unit` frames at the config's sample rate;
- `NAME.mp4`: the user's camera (black when off) and the model's avatar side by side,
  `units * 4` frames at 25 fps, upscaled to at least 128 px high, the stereo WAV as sound;
- `NAME_transcript.json` / `.txt`: per unit with model text, its time span, the model's
  bytes and turn state (speaking / yielded), the user's typed text; and the decoded text;
- `NAME_latency.png`: histogram of per-unit step times with p50/p99 and the 160 ms budget;
- `NAME_report.json`: the driver's latency summary and the list of files.
"""

from __future__ import annotations

import json
import os

import numpy as np

from wan_streamer_jax.config import FRAMES_PER_UNIT, UNIT_SECONDS, VIDEO_FPS
from wan_streamer_jax.streaming.recording import UserRecording

TURN_STATES = ("silent", "speaking", "yielded")


class StreamRecorder:
  """Collects one slot's outputs unit by unit (host numpy; one slot of the engine's output dict)."""

  def __init__(self, recording: UserRecording, slot: int = 0):
    self.recording, self.slot = recording, slot
    self.audio, self.video, self.text, self.turn, self.units = [], [], [], [], []

  def add(self, unit: int, outputs: dict) -> None:
    s = self.slot
    self.audio.append(np.asarray(outputs["audio"][s], np.float32))
    self.video.append(np.asarray(outputs["video"][s], np.uint8))
    self.text.append(np.asarray(outputs["text"][s], np.int32))
    self.turn.append(int(outputs["turn_state"][s]))
    self.units.append(int(outputs["unit"][s]) if "unit" in outputs else unit)

  @property
  def num_units(self) -> int:
    return len(self.audio)

  def model_audio(self) -> np.ndarray:
    return np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)

  def model_video(self) -> np.ndarray:
    return np.concatenate(self.video) if self.video else np.zeros((0, 1, 1, 3), np.uint8)

  def write(self, out_dir: str, report=None, *, sample_rate: int, mp4: bool = True) -> dict:
    """Writes every file (see the module docstring) -> {kind: path}."""
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, self.recording.name)
    n = self.num_units
    user = self.recording.truncated(n)
    files = {"wav": base + "_stereo.wav", "transcript": base + "_transcript.json",
             "transcript_text": base + "_transcript.txt"}
    write_stereo_wav(files["wav"], user.audio, self.model_audio(), sample_rate)
    if mp4:
      files["mp4"] = base + ".mp4"
      write_side_by_side_mp4(files["mp4"], user.video, user.camera_on, self.model_video(), files["wav"])
    transcript = build_transcript(np.stack(self.text), self.turn, self.units, user.text)
    with open(files["transcript"], "w") as f:
      json.dump(transcript, f, indent=1)
    with open(files["transcript_text"], "w") as f:
      f.write(transcript_text(transcript))
    summary = None
    if report is not None:
      files["latency_png"] = base + "_latency.png"
      summary = report.summary()
      plot_latency(files["latency_png"], report, title=self.recording.name)
    files["report"] = base + "_report.json"
    with open(files["report"], "w") as f:
      json.dump({"recording": self.recording.name, "units": n, "seconds": n * UNIT_SECONDS, "latency": summary,
                 "files": files}, f, indent=1)
    return files


def write_stereo_wav(path: str, left: np.ndarray, right: np.ndarray, sample_rate: int) -> None:
  """16-bit PCM stereo; the shorter channel is zero-padded."""
  from scipy.io import wavfile
  n = max(left.shape[0], right.shape[0])
  both = np.zeros((n, 2), np.float32)
  both[: left.shape[0], 0] = left
  both[: right.shape[0], 1] = right
  pcm = np.clip(np.rint(both * 32767.0), -32768, 32767).astype(np.int16)
  wavfile.write(path, sample_rate, pcm)


def side_by_side(user_video: np.ndarray, camera_on: np.ndarray, model_video: np.ndarray, min_height: int = 128
                 ) -> np.ndarray:
  """uint8 `[F, h, 2 w, 3]`: user | avatar per frame (user black where the camera is off), upscaled."""
  F = min(user_video.shape[0], model_video.shape[0])
  user = np.array(user_video[:F])
  user[~np.repeat(camera_on, FRAMES_PER_UNIT)[:F]] = 0
  both = np.concatenate([user, model_video[:F]], axis=2)
  scale = max(1, -(-min_height // both.shape[1]))
  return np.repeat(np.repeat(both, scale, axis=1), scale, axis=2)


def write_side_by_side_mp4(path: str, user_video: np.ndarray, camera_on: np.ndarray, model_video: np.ndarray,
                           audio_path: str | None) -> None:
  from data_pipelines import media_io
  media_io.write_mp4(path, side_by_side(user_video, camera_on, model_video), fps=VIDEO_FPS, audio_path=audio_path)


def _bytes_text(tokens) -> str:
  from data_pipelines import text_slots
  return text_slots.decode_slots(np.asarray(tokens)[None])


def build_transcript(model_text: np.ndarray, turn_states, units, user_text: np.ndarray) -> dict:
  """Per-unit entries (only units with model or typed user text, or a turn change) + decoded texts.

  model_text int32 `[units, text_slots]`; turn_states int `[units]`; user_text int32 `[units, slots]`.
  """
  from data_pipelines import text_slots
  entries = []
  for i, (row, turn, u) in enumerate(zip(model_text, turn_states, units)):
    said = _bytes_text(row) if np.any(row < 256) or np.any(row == text_slots.WORD_END) else ""
    typed = _bytes_text(user_text[i]) if i < len(user_text) and np.any(user_text[i] < 256) else ""
    if said or typed or turn == 2:
      entries.append({"unit": int(u), "start_s": round(u * UNIT_SECONDS, 2), "end_s": round((u + 1) * UNIT_SECONDS, 2),
                      "model": said, "model_tokens": [int(t) for t in row], "turn_state": TURN_STATES[int(turn)],
                      "user_typed": typed})
  speaking = [int(t) == 1 for t in turn_states]
  return {"unit_seconds": UNIT_SECONDS, "units": len(units), "model_text": text_slots.decode_slots(model_text),
          "user_typed_text": text_slots.decode_slots(user_text[: len(units)]) if len(user_text) else "",
          "speaking_fraction": float(np.mean(speaking)) if speaking else 0.0, "entries": entries}


def transcript_text(transcript: dict) -> str:
  lines = [f"# {transcript['units']} units of {transcript['unit_seconds']} s; model text: {transcript['model_text']!r}"]
  for e in transcript["entries"]:
    t = e["start_s"]
    stamp = f"[{int(t // 60):02d}:{t % 60:05.2f}] unit {e['unit']:5d}"
    parts = []
    if e["user_typed"]:
      parts.append(f"user typed: {e['user_typed']}")
    if e["model"]:
      parts.append(f"model: {e['model']}")
    if e["turn_state"] == "yielded":
      parts.append("(end of turn)")
    lines.append(f"{stamp}  " + "  ".join(parts))
  return "\n".join(lines) + "\n"


def plot_latency(path: str, report, title: str = "") -> None:
  """Histogram PNG of the clocked units' step times (ms) with p50, p99 and the unit budget."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  s = report.summary()
  ms = 1000 * report.step_s
  budget = 1000 * report.unit_seconds
  fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
  if ms.size:
    hi = max(float(ms.max()), budget) * 1.05
    ax.hist(ms, bins=np.linspace(0, hi, 60), color="#4878a8", edgecolor="white", linewidth=0.4)
    for key, colour in (("step_ms_p50", "#2a9d2a"), ("step_ms_p99", "#e08a00")):
      ax.axvline(s[key], color=colour, linestyle="--", label=f"{key.split('_')[-1]} {s[key]:.1f} ms")
    ax.axvline(budget, color="#c03030", linewidth=2, label=f"unit budget {budget:.0f} ms")
    ax.legend(loc="upper right", fontsize=8)
  ax.set_xlabel("step time per 160 ms unit (ms)")
  ax.set_ylabel("units")
  rtf = s.get("real_time_factor", float("nan"))
  lat = s.get("latency_ms_p99", float("nan"))
  ax.set_title(f"{title}  {s['units']} units, model-side latency p99 {lat:.0f} ms, RTF {rtf:.2f}, "
               f"{s['deadline_misses']} deadline misses", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
