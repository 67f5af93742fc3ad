"""Streaming outputs: recordings cut into unit inputs, and the files a streamed conversation leaves."""

import json

import numpy as np
import pytest
from scipy.io import wavfile

from data_pipelines import media_io, text_slots
from tests.helpers import tiny_config
from wan_streamer_jax.streaming.driver import LatencyReport
from wan_streamer_jax.streaming.outputs import StreamRecorder, side_by_side
from wan_streamer_jax.streaming.recording import load_recording, synthetic_recording, unit_stream


@pytest.fixture(scope="module")
def cfg():
  return tiny_config()


def test_synthetic_recording_units_are_the_conversation(cfg):
  rec = synthetic_recording(cfg, "validation", 1)
  spu = cfg.audio.samples_per_unit
  assert rec.audio.shape == (rec.num_units * spu,) and rec.video.shape[0] == rec.num_units * 4
  template = {"audio": np.zeros((3, spu), np.float32), "video": np.zeros((3, 4, 16, 16, 3), np.uint8),
              "camera_on": np.zeros(3, bool), "text": np.full((3, cfg.text.text_slots), 256, np.int32),
              "seed": np.zeros(3, np.int32)}
  units = list(unit_stream(rec, template, slot=2, seed=11))
  assert len(units) == rec.num_units
  inputs, active, reset = units[5]
  assert active.tolist() == [False, False, True] and not reset.any() and units[0][2].tolist() == [False, False, True]
  np.testing.assert_array_equal(inputs["audio"][2], rec.audio[5 * spu:6 * spu])
  np.testing.assert_array_equal(inputs["video"][2], rec.video[20:24])
  assert inputs["audio"][:2].max() == 0 and inputs["text"].shape == (3, cfg.text.text_slots)
  assert inputs["seed"].tolist() == [0, 0, 11] and (inputs["text"][:2] == 256).all()
  assert template["audio"].max() == 0                                   # the template is not written to
  assert inputs["audio"].dtype == np.float32 and inputs["video"].dtype == np.uint8
  with pytest.raises(ValueError, match="slot"):
    next(unit_stream(rec, template, slot=3))
  with pytest.raises(ValueError, match="split"):
    synthetic_recording(cfg, "held_out", 0)


def test_folder_and_wav_recordings(cfg, tmp_path):
  sr = cfg.audio.sample_rate
  folder = tmp_path / "call"
  folder.mkdir()
  wave = (0.3 * np.sin(np.arange(int(0.5 * sr)) / 5)).astype(np.float32)   # 0.5 s -> 4 units (padded)
  media_io.write_wav(str(folder / "user.wav"), wave, sr)
  frames_dir = folder / "user_frames"
  frames_dir.mkdir()
  from PIL import Image
  for i in range(6):                                                          # 6 frames: camera on for 1 unit
    Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(frames_dir / f"{i:03d}.png")
  rec = load_recording(str(folder), cfg)
  assert rec.num_units == 4 and rec.name == "call"
  assert rec.camera_on.tolist() == [True, False, False, False]
  assert rec.video.shape == (16, cfg.video.height, cfg.video.width, 3)
  assert (rec.text == text_slots.MISSING).all()
  only = load_recording(str(folder / "user.wav"), cfg)
  assert only.num_units == 4 and not only.camera_on.any()
  with pytest.raises(media_io.MediaError, match="not found"):
    load_recording(str(tmp_path / "nope.wav"), cfg)


def test_recorder_writes_well_formed_files(cfg, tmp_path):
  rec = synthetic_recording(cfg, "validation", 1).truncated(12)
  spu, H, W = cfg.audio.samples_per_unit, cfg.video.height, cfg.video.width
  recorder = StreamRecorder(rec, slot=1)
  rng = np.random.default_rng(0)
  said = [ord(c) for c in "hi"] + [text_slots.WORD_END, text_slots.END_OF_TURN]
  for u in range(12):
    text = np.full((2, 4), text_slots.PAD, np.int32)
    if u == 3:
      text[1] = said
    out = {"audio": rng.uniform(-0.5, 0.5, (2, spu)).astype(np.float32),
           "video": np.full((2, 4, H, W, 3), 10 * u, np.uint8), "text": text,
           "turn_state": np.array([0, 2 if u == 3 else 1]), "unit": np.array([0, u])}
    recorder.add(u, out)
  report = LatencyReport(unit_seconds=0.16, realtime=False, step_s=np.linspace(0.01, 0.05, 12),
                         end_to_end_s=0.16 + np.linspace(0.01, 0.05, 12), missed=np.zeros(12, bool), warmup_s=(1.0,),
                         wall_s=0.4)
  files = recorder.write(str(tmp_path), report, sample_rate=cfg.audio.sample_rate)
  rate, pcm = wavfile.read(files["wav"])
  assert rate == cfg.audio.sample_rate and pcm.shape == (12 * spu, 2) and pcm.dtype == np.int16
  np.testing.assert_allclose(pcm[:, 0] / 32767, rec.audio, atol=1e-4)          # user left
  np.testing.assert_allclose(pcm[:, 1] / 32767, recorder.model_audio(), atol=1e-4)  # model right
  frames = media_io.read_video(files["mp4"], 128, 256)
  assert frames.shape[0] == 48                                                  # 12 units x 4 frames
  assert abs(int(frames[-1, :, 128:].mean()) - 110) <= 3                        # the avatar half, last unit
  t = json.load(open(files["transcript"]))
  assert t["units"] == 12 and t["model_text"] == "hi |"
  assert t["entries"][0]["unit"] == 3 and t["entries"][0]["start_s"] == 0.48 and t["entries"][0]["turn_state"] == "yielded"
  assert "[00:00.48] unit     3  model: hi |" in open(files["transcript_text"]).read()
  assert open(files["latency_png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  r = json.load(open(files["report"]))
  assert r["latency"]["units"] == 12 and r["latency"]["step_ms_p50"] == pytest.approx(30.0)


def test_side_by_side_blanks_the_camera_when_off():
  user = np.full((8, 16, 16, 3), 200, np.uint8)
  model = np.full((8, 16, 16, 3), 50, np.uint8)
  both = side_by_side(user, np.array([True, False]), model)
  assert both.shape == (8, 128, 256, 3)
  assert both[0, :, :128].min() == 200 and both[4, :, :128].max() == 0 and both[4, :, 128:].min() == 50
