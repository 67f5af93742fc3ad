"""The user's side of a conversation, cut into the streaming engine's per-unit inputs.

Sources (all resampled to the config's sample rate / 25 fps / H x W):
- a conversation of the synthetic corpus by split and index (`synthetic_recording`): generated
  on the fly (deterministic) or read from a built TFDS corpus;
- a recording on disk (`load_recording`): a conversation folder (`user.wav`, optional
  `user.mp4` / `user_frames/`, optional `transcript.json` with typed user words, the layout of
  `data_pipelines/folder_builder.py`), a single `.wav` (camera off), or an `.mp4` whose audio
  track is the user's voice (or a `.wav` beside it with the same name).

`unit_stream(rec, template, slot)` yields `(inputs, active, reset)` per unit for the pool of
`template` (the engine's `silent_inputs()`) with the conversation in `slot` (the others
inactive), reset at unit 0.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from typing import Iterator

import numpy as np

from wan_streamer_jax.config import FRAMES_PER_UNIT, Config


@dataclasses.dataclass(frozen=True)
class UserRecording:
  """One conversation's user streams on the unit clock.

  audio float32 `[units * samples_per_unit]` in [-1, 1]; video uint8 `[units * 4, H, W, 3]`;
  camera_on bool `[units]`; text int32 `[units, text_slots]` (typed bytes / PAD, MISSING when
  the user has no text box). `reference` holds the recorded model side when there is one
  (the synthetic corpus): `{"audio", "video", "text"}` in the same shapes.
  """

  name: str
  audio: np.ndarray
  video: np.ndarray
  camera_on: np.ndarray
  text: np.ndarray
  samples_per_unit: int
  reference: dict | None = None

  @property
  def num_units(self) -> int:
    return int(self.camera_on.shape[0])

  def truncated(self, units: int) -> "UserRecording":
    if units >= self.num_units:
      return self
    spu, ref = self.samples_per_unit, self.reference
    cut = lambda d: {"audio": d["audio"][: units * spu], "video": d["video"][: units * FRAMES_PER_UNIT],  # noqa: E731
                     "text": d["text"][:units]}
    return dataclasses.replace(self, audio=self.audio[: units * spu], video=self.video[: units * FRAMES_PER_UNIT],
                               camera_on=self.camera_on[:units], text=self.text[:units],
                               reference=cut(ref) if ref else None)


def from_conversation(ex: dict, samples_per_unit: int) -> UserRecording:
  """A corpus example (`data_pipelines.corpus` feature dict) -> its user streams + reference."""
  name = ex["conversation_id"]
  name = name.decode() if isinstance(name, bytes) else str(name)
  ref = {"audio": np.asarray(ex["model_audio"], np.float32), "video": np.asarray(ex["model_video"], np.uint8),
         "text": np.asarray(ex["model_text"], np.int32)}
  return UserRecording(name=name, audio=np.asarray(ex["user_audio"], np.float32),
                       video=np.asarray(ex["user_video"], np.uint8), camera_on=np.asarray(ex["user_camera_on"], bool),
                       text=np.asarray(ex["user_text"], np.int32), samples_per_unit=samples_per_unit, reference=ref)


def synthetic_recording(cfg: Config, split: str, index: int, *, seed: int = 0, data_dir: str | None = None,
                        size: str = "tiny") -> UserRecording:
  """Conversation `index` of `split` of the synthetic corpus (read from `data_dir` when built there)."""
  from data_pipelines.corpus import SPLIT_CODES, CorpusSpec, generate_conversation
  if split not in SPLIT_CODES:
    raise ValueError(f"split: expected one of {sorted(SPLIT_CODES)}, received {split!r}")
  if index < 0:
    raise ValueError(f"conversation index: expected >= 0, received {index}")
  if data_dir:
    from data_pipelines.synthetic_builder import make_synthetic_builder
    builder = make_synthetic_builder(cfg, size, data_dir=os.path.expanduser(data_dir), seed=seed)
    if not builder.is_prepared():
      raise ValueError(f"data_dir {data_dir}: no built {size!r} synthetic corpus for config {cfg.name!r} "
                       "(build it with launch.make_dataset, or omit --data_dir to generate on the fly)")
    source = builder.as_data_source(split)
    if index >= len(source):
      raise ValueError(f"conversation index: expected < {len(source)} ({split} split), received {index}")
    ex = source[index]
  else:
    ex = generate_conversation(CorpusSpec.from_config(cfg, seed=seed), split, index)
  return from_conversation(ex, cfg.audio.samples_per_unit)


def _extract_audio(path: str, sample_rate: int) -> np.ndarray:
  """The first audio track of a media file (imageio-ffmpeg's ffmpeg) -> mono float32."""
  from data_pipelines import media_io
  try:
    import imageio_ffmpeg
  except ImportError as e:
    raise media_io.MediaError(path, "reading the audio of an MP4 needs imageio-ffmpeg; give a .wav") from e
  with tempfile.TemporaryDirectory() as tmp:
    wav = os.path.join(tmp, "audio.wav")
    with media_io.fork_exec_ok():
      res = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", path, "-vn",
                            "-ac", "1", "-ar", str(sample_rate), "-f", "wav", wav], capture_output=True, text=True)
    if res.returncode != 0 or not os.path.exists(wav):
      raise media_io.MediaError(path, f"no readable audio track (ffmpeg: {res.stderr.strip()[-300:]})")
    return media_io.read_wav(wav, sample_rate)


def _typed_text(transcript: dict, num_units: int, slots: int, path: str) -> np.ndarray:
  from data_pipelines import folder_builder, text_slots
  if transcript.get("user_typed") and "user" in transcript:
    return folder_builder._text_from_words(transcript["user"], num_units, slots, path)  # noqa: SLF001
  return text_slots.missing_text(num_units, slots)


def load_recording(path: str, cfg: Config) -> UserRecording:
  """A folder / .wav / .mp4 recording of the user -> UserRecording (MediaError names a bad file)."""
  import json
  from data_pipelines import media_io
  sr, spu, slots = cfg.audio.sample_rate, cfg.audio.samples_per_unit, cfg.text.text_slots
  H, W = cfg.video.height, cfg.video.width
  path = os.path.abspath(os.path.expanduser(path))
  transcript, video_path = {}, None
  if os.path.isdir(path):
    audio = media_io.read_wav(os.path.join(path, "user.wav"), sr)
    for cand in ("user.mp4", "user.mov", "user.webm", "user_frames"):
      if os.path.exists(os.path.join(path, cand)):
        video_path = os.path.join(path, cand)
        break
    tpath = os.path.join(path, "transcript.json")
    if os.path.exists(tpath):
      with open(tpath) as f:
        transcript = json.load(f)
  elif path.lower().endswith(".wav"):
    audio = media_io.read_wav(path, sr)
  elif os.path.isfile(path):
    video_path = path
    side = os.path.splitext(path)[0] + ".wav"
    audio = media_io.read_wav(side, sr) if os.path.exists(side) else _extract_audio(path, sr)
  else:
    raise media_io.MediaError(path, "file not found (expected a conversation folder, a .wav or an .mp4)")
  units = max(1, -(-audio.shape[0] // spu))
  audio = np.pad(audio, (0, units * spu - audio.shape[0]))
  video = np.zeros((units * FRAMES_PER_UNIT, H, W, 3), np.uint8)
  camera = np.zeros(units, bool)
  if video_path is not None:
    frames = media_io.read_video(video_path, H, W, units * FRAMES_PER_UNIT)
    video[: frames.shape[0]] = frames
    camera[: frames.shape[0] // FRAMES_PER_UNIT] = True
  text = _typed_text(transcript, units, slots, path)
  name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
  return UserRecording(name=name, audio=audio.astype(np.float32), video=video, camera_on=camera, text=text,
                       samples_per_unit=spu)


def unit_inputs(rec: UserRecording, unit: int, template: dict, slot: int = 0, seed: int = 0) -> dict:
  """Engine inputs for one unit: the recording in `slot`; the other slots keep `template`'s values.

  `template` is the engine's `silent_inputs()` (silence, camera off, PAD; it fixes the keys and
  the slot count); `seed` goes to `inputs["seed"][slot]` when the engine takes a seed.
  """
  spu, F = rec.samples_per_unit, FRAMES_PER_UNIT
  inputs = {k: np.array(v) for k, v in template.items()}
  inputs["audio"][slot] = rec.audio[unit * spu:(unit + 1) * spu]
  inputs["video"][slot] = rec.video[unit * F:(unit + 1) * F]
  inputs["camera_on"][slot] = rec.camera_on[unit]
  inputs["text"][slot] = rec.text[unit]
  if "seed" in inputs:
    inputs["seed"][slot] = seed
  return inputs


def unit_stream(rec: UserRecording, template: dict, slot: int = 0, seed: int = 0
                ) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
  """`(inputs, active, reset)` for every unit; only `slot` is active; reset at unit 0."""
  num_slots = int(template["camera_on"].shape[0])
  if not 0 <= slot < num_slots:
    raise ValueError(f"slot: expected an index in [0, {num_slots}), received {slot}")
  active = np.zeros(num_slots, bool)
  active[slot] = True
  for u in range(rec.num_units):
    reset = np.zeros(num_slots, bool)
    reset[slot] = u == 0
    yield unit_inputs(rec, u, template, slot, seed), active.copy(), reset
