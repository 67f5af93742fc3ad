"""TFDS builders: the synthetic corpus round trip, and ingesting a recordings folder with bad files."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from data_pipelines import media_io
from data_pipelines.corpus import CorpusSpec, generate_conversation
from data_pipelines.folder_builder import RecordingError, make_folder_builder
from data_pipelines.synthetic_builder import make_synthetic_builder
from wan_streamer_jax.config import Config, FRAMES_PER_UNIT, TextConfig

CFG = Config()


def test_synthetic_builder_round_trip(tmp_path):
  builder = make_synthetic_builder(CFG, "tiny", data_dir=str(tmp_path),
                                   num_examples={"train": 3, "validation": 1, "test": 1})
  builder.download_and_prepare()
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 3, "validation": 1, "test": 1}
  source = builder.as_data_source("train")
  assert len(source) == 3
  ex = source[0]
  cid = ex["conversation_id"].decode()
  split, seed, index = cid.split("-")
  ref = generate_conversation(CorpusSpec.from_config(CFG, seed=int(seed)), split, int(index))
  for k in ("user_audio", "user_video", "user_text", "user_camera_on", "model_audio", "model_video",
            "model_text"):
    assert ex[k].dtype == ref[k].dtype and ex[k].tobytes() == ref[k].tobytes(), k
  assert int(ex["num_units"]) == int(ref["num_units"])
  assert ex["metadata"].decode() == ref["metadata"]
  assert "tiny_16x16_16000hz_t4_s0" in str(builder.data_dir)


def _write_conversation(root, name, rng, user_video="png", model_video="png", corrupt=None):
  d = os.path.join(root, name)
  os.makedirs(d)
  media_io.write_wav(os.path.join(d, "user.wav"), 0.1 * rng.standard_normal(44100), 44100)  # 1.0 s
  media_io.write_wav(os.path.join(d, "model.wav"), 0.1 * rng.standard_normal(26460), 22050)  # 1.2 s
  frames = rng.integers(0, 255, (36, 24, 32, 3), dtype=np.uint8)  # 1.2 s at 30 fps
  for role, kind in (("user", user_video), ("model", model_video)):
    n = 24 if role == "user" else 36  # the user's camera stops after 0.8 s
    if kind == "png":
      os.makedirs(os.path.join(d, f"{role}_frames"))
      for i, f in enumerate(frames[:n]):
        Image.fromarray(f).save(os.path.join(d, f"{role}_frames", f"{i:04d}.png"))
      with open(os.path.join(d, f"{role}_frames", "fps.txt"), "w") as f:
        f.write("30")
    elif kind == "mp4":
      media_io.write_mp4(os.path.join(d, f"{role}.mp4"), frames[:n], fps=30)
  with open(os.path.join(d, "transcript.json"), "w") as f:
    json.dump({"model": [{"word": "hi", "start": 0.1, "end": 0.3}, {"word": "there", "start": 0.35, "end": 0.6}],
               "task": "greeting"}, f)
  if corrupt == "wav":
    with open(os.path.join(d, "model.wav"), "wb") as f:
      f.write(b"RIFF\x10\x00\x00\x00WAVEfmt truncated")
  elif corrupt == "png":
    with open(os.path.join(d, "model_frames", "0003.png"), "wb") as f:
      f.write(b"\x89PNG not really")
  return d


def test_folder_builder_ingests_and_reports_bad_files(tmp_path, caplog):
  rng = np.random.default_rng(0)
  root = str(tmp_path / "recordings")
  _write_conversation(root, "a_good", rng)
  _write_conversation(root, "b_no_user_camera", rng, user_video=None)
  bad_wav = _write_conversation(root, "c_bad_wav", rng, corrupt="wav")
  bad_png = _write_conversation(root, "d_bad_png", rng, corrupt="png")
  no_model = _write_conversation(root, "e_no_model_video", rng, model_video=None)
  if media_io.have_ffmpeg():
    _write_conversation(root, "f_mp4", rng, user_video="mp4", model_video="mp4")
    with open(os.path.join(_write_conversation(root, "g_bad_mp4", rng, model_video=None), "model.mp4"), "wb") as f:
      f.write(b"\x00\x00\x00\x18ftypmp42" + bytes(200))

  builder = make_folder_builder(CFG, root, data_dir=str(tmp_path / "tfds"))
  with caplog.at_level(logging.WARNING):
    builder.download_and_prepare()
  good = {"a_good", "b_no_user_camera"} | ({"f_mp4"} if media_io.have_ffmpeg() else set())
  source = builder.as_data_source("train")
  assert {source[i]["conversation_id"].decode() for i in range(len(source))} == good
  skipped = {os.path.basename(s["folder"]): s for s in builder.skipped}
  assert skipped["c_bad_wav"]["path"] == os.path.join(bad_wav, "model.wav")
  assert skipped["d_bad_png"]["path"] == os.path.join(bad_png, "model_frames", "0003.png")
  assert skipped["e_no_model_video"]["path"].startswith(no_model)
  if media_io.have_ffmpeg():
    assert skipped["g_bad_mp4"]["path"].endswith("g_bad_mp4/model.mp4")
  assert os.path.join(bad_wav, "model.wav") in caplog.text  # reported with its path
  assert builder.info.metadata["skipped"]  # and kept with the dataset

  spu = CFG.audio.samples_per_unit
  for i in range(len(source)):
    ex = source[i]
    u = int(ex["num_units"])
    assert u == 8  # ceil(1.2 s / 0.16 s)
    assert ex["user_audio"].shape == ex["model_audio"].shape == (u * spu,)
    assert ex["user_video"].shape == ex["model_video"].shape == (u * FRAMES_PER_UNIT, 16, 16, 3)
    camera = ex["user_camera_on"]
    if ex["conversation_id"] == b"b_no_user_camera":
      assert not camera.any()
    else:
      assert camera.tolist() == [True] * 5 + [False] * 3  # 0.8 s of user video = 20 frames = 5 units
    assert (ex["user_text"] == TextConfig.MISSING).all()
    assert bytes(int(t) for t in ex["model_text"].reshape(-1) if t < 256) == b"hithere"


def test_folder_builder_strict_mode_fails_before_writing(tmp_path):
  rng = np.random.default_rng(1)
  root = str(tmp_path / "recordings")
  _write_conversation(root, "a_good", rng)
  bad = _write_conversation(root, "b_bad", rng, corrupt="wav")
  builder = make_folder_builder(CFG, root, data_dir=str(tmp_path / "tfds"), on_error="raise")
  with pytest.raises(RecordingError, match=os.path.join(bad, "model.wav")):
    builder.download_and_prepare()
  assert not builder.is_prepared()
