"""TFDS builder that ingests your own recorded conversations (same features as the synthetic corpus).

Folder layout, one subfolder per conversation:

    recordings/
      call_0001/
        user.wav                       required (any rate, mono or stereo)
        model.wav                      required (the side the model learns to produce)
        model.mp4 | model_frames/      required (MP4 needs imageio-ffmpeg; or PNG frames + fps.txt)
        user.mp4  | user_frames/       optional (absent -> camera off: video_in is MISSING)
        transcript.json                optional: {"model": [{"word": "hi", "start": 1.2, "end": 1.4}, ...],
                                                  "user": [...], "user_typed": false,
                                                  "task": "...", "expected_answer": "..."}

Everything is resampled to 25 fps / the config's sample rate and resized to
H x W. Units = ceil(longest audio / 160 ms); audio is zero-padded, user frames
past the end of the user video count as camera-off, model frames repeat the
last one. Model words go to `model_text` (a turn ends at a gap > 0.8 s);
without a transcript `model_text` is MISSING. User words go to `user_text`
only when `user_typed` is true (typed chat), else it is MISSING.

A conversation with a missing or corrupt file is skipped and reported (path
and reason: a warning, `builder.skipped`, and `skipped` in the dataset's
metadata) — or, with `on_error="raise"`, the build stops with that message
before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines import media_io, text_slots
from data_pipelines.synthetic_builder import conversation_features
from wan_streamer_jax.config import FRAMES_PER_UNIT, Config

log = logging.getLogger(__name__)
TURN_GAP_S = 0.8


class RecordingError(Exception):
  """A conversation folder that cannot be ingested; the message names the file."""


def _find_video(folder: str, role: str) -> str | None:
  for cand in (f"{role}.mp4", f"{role}.mov", f"{role}.webm", f"{role}_frames"):
    p = os.path.join(folder, cand)
    if os.path.exists(p):
      return p
  return None


def _text_from_words(words, num_units: int, slots: int, path: str) -> np.ndarray:
  events, prev_end = [], None
  try:
    items = sorted(((float(w["start"]), float(w.get("end", w["start"])), str(w["word"])) for w in words))
  except (KeyError, TypeError, ValueError) as e:
    raise RecordingError(f"{path}: bad word entry ({type(e).__name__}: {e}); expected "
                         "{'word': str, 'start': seconds, 'end': seconds}") from e
  unit_of = lambda s: min(max(int(s / 0.16), 0), num_units - 1)  # noqa: E731
  for i, (start, end, word) in enumerate(items):
    if prev_end is not None and start - prev_end > TURN_GAP_S:
      events.append(text_slots.end_of_turn_event(unit_of(prev_end)))
    events.append(text_slots.word_event(unit_of(start), word))
    prev_end = max(end, start)
  if prev_end is not None:
    events.append(text_slots.end_of_turn_event(unit_of(prev_end)))
  out, _ = text_slots.layout_text(events, num_units, slots)
  return out


def load_conversation(folder: str, height: int, width: int, sample_rate: int, slots: int) -> dict:
  """One conversation folder -> the feature dict; raises RecordingError / MediaError naming the file."""
  spu = int(round(sample_rate * 0.16))
  user_audio = media_io.read_wav(os.path.join(folder, "user.wav"), sample_rate)
  model_audio = media_io.read_wav(os.path.join(folder, "model.wav"), sample_rate)
  num_units = -(-max(user_audio.shape[0], model_audio.shape[0]) // spu)
  n_samples, n_frames = num_units * spu, num_units * FRAMES_PER_UNIT
  pad = lambda a: np.pad(a, (0, n_samples - a.shape[0]))  # noqa: E731

  model_path = _find_video(folder, "model")
  if model_path is None:
    raise RecordingError(f"{os.path.join(folder, 'model.mp4')}: missing model video "
                         "(model.mp4 or a model_frames/ folder of PNGs)")
  mv = media_io.read_video(model_path, height, width, n_frames)
  model_video = np.concatenate([mv, np.repeat(mv[-1:], n_frames - mv.shape[0], axis=0)])

  user_path = _find_video(folder, "user")
  user_video = np.zeros((n_frames, height, width, 3), np.uint8)
  camera = np.zeros(num_units, bool)
  if user_path is not None:
    uv = media_io.read_video(user_path, height, width, n_frames)
    user_video[: uv.shape[0]] = uv
    camera[: uv.shape[0] // FRAMES_PER_UNIT] = True

  transcript, tpath = {}, os.path.join(folder, "transcript.json")
  if os.path.exists(tpath):
    try:
      with open(tpath) as f:
        transcript = json.load(f)
    except (OSError, ValueError) as e:
      raise RecordingError(f"{tpath}: cannot parse JSON ({e})") from e
    if not isinstance(transcript, dict):
      raise RecordingError(f"{tpath}: expected a JSON object with 'model'/'user' word lists")
  if "model" in transcript:
    model_text = _text_from_words(transcript["model"], num_units, slots, tpath)
  else:
    model_text = text_slots.missing_text(num_units, slots)
  if transcript.get("user_typed") and "user" in transcript:
    user_text = _text_from_words(transcript["user"], num_units, slots, tpath)
  else:
    user_text = text_slots.missing_text(num_units, slots)
  name = os.path.basename(os.path.normpath(folder))
  meta = {"source_folder": os.path.abspath(folder), "user_video": user_path, "model_video": model_path,
          "transcript": transcript if transcript else None, "samples_per_unit": spu,
          "sample_rate": sample_rate}
  return {
      "user_audio": pad(user_audio), "user_video": user_video, "user_camera_on": camera,
      "user_text": user_text, "model_audio": pad(model_audio), "model_video": model_video,
      "model_text": model_text, "num_units": np.int32(num_units),
      "task": str(transcript.get("task", "recorded")), "expected_answer": str(transcript.get("expected_answer", "")),
      "answer_unit": np.int32(-1), "conversation_id": name, "metadata": json.dumps(meta, sort_keys=True),
  }


class RecordedDialoguesConfig(tfds.core.BuilderConfig):
  def __init__(self, *, recordings_dir: str, height: int, width: int, sample_rate: int, text_slots: int,
               label: str | None = None, validation_fraction: float = 0.0, **kwargs):
    label = re.sub(r"[^a-zA-Z0-9]+", "_", label or os.path.basename(os.path.normpath(recordings_dir))).strip("_")
    super().__init__(name=f"{label or 'recordings'}_{height}x{width}_{sample_rate}hz_t{text_slots}",
                     description=f"recordings from {recordings_dir}", **kwargs)
    self.recordings_dir = recordings_dir
    self.height, self.width, self.sample_rate, self.text_slots = height, width, sample_rate, text_slots
    self.validation_fraction = validation_fraction


class RecordedDialogues(tfds.core.GeneratorBasedBuilder):
  """Your own conversations (see the module docstring for the folder layout)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # see SyntheticDialogues.code_path
    return epath.Path(__file__)

  def __init__(self, *, on_error: str = "skip", **kwargs):
    if on_error not in ("skip", "raise"):
      raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    self.on_error = on_error
    self.skipped: list[dict] = []

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self, description="Recorded user <-> model conversations, resampled to the unit clock.",
        features=conversation_features(c.height, c.width, c.text_slots),
        metadata=tfds.core.MetadataDict())

  def _conversation_folders(self) -> list[str]:
    root = self.builder_config.recordings_dir
    if not os.path.isdir(root):
      raise RecordingError(f"{root}: recordings folder not found")
    folders = sorted(os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not folders:
      raise RecordingError(f"{root}: no conversation subfolders")
    return folders

  def _split_generators(self, dl_manager):
    del dl_manager
    folders = self._conversation_folders()
    c = self.builder_config
    if self.on_error == "raise":  # validate everything before a single example is written
      for f in folders:
        self._load(f)
    n_val = int(round(len(folders) * c.validation_fraction))
    splits = {"train": folders[n_val:]}
    if n_val:
      splits["validation"] = folders[:n_val]
    return {name: self._generate_examples(fs) for name, fs in splits.items()}

  def _load(self, folder: str) -> dict:
    c = self.builder_config
    try:
      return load_conversation(folder, c.height, c.width, c.sample_rate, c.text_slots)
    except (media_io.MediaError, RecordingError) as e:
      if self.on_error == "raise":
        raise RecordingError(f"cannot ingest {folder}: {e}") from e
      raise

  def _generate_examples(self, folders):
    for folder in folders:
      try:
        ex = self._load(folder)
      except (media_io.MediaError, RecordingError) as e:
        path = e.path if isinstance(e, media_io.MediaError) else str(e).split(": ")[0]
        record = {"folder": folder, "path": path, "reason": str(e)}
        self.skipped.append(record)
        self.info.metadata["skipped"] = list(self.skipped)
        log.warning("skipping conversation %s: %s", folder, e)
        continue
      yield os.path.basename(folder), ex


def make_folder_builder(cfg: Config, recordings_dir: str, data_dir: str | None = None, on_error: str = "skip",
                        label: str | None = None, validation_fraction: float = 0.0) -> RecordedDialogues:
  config = RecordedDialoguesConfig(recordings_dir=recordings_dir, height=cfg.video.height, width=cfg.video.width,
                                   sample_rate=cfg.audio.sample_rate, text_slots=cfg.text.text_slots,
                                   label=label, validation_fraction=validation_fraction)
  return RecordedDialogues(config=config, data_dir=data_dir, on_error=on_error)
