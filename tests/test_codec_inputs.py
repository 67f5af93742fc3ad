"""Codecs: bad inputs raise ValueError naming expected and received, before anything compiles."""

import numpy as np
import pytest
from flax import nnx

from wan_streamer_jax.codecs import AudioCodec, VideoCodec, base
from wan_streamer_jax.config import AudioCodecConfig, VideoCodecConfig

ACFG = AudioCodecConfig(sample_rate=16000, num_quantizers=2, channels=(8, 8), strides=(8, 5, 4, 4), latent_dim=4)
VCFG = VideoCodecConfig(height=16, width=16, spatial_stride=8, channels=(8, 8))


@pytest.fixture(autouse=True)
def no_compile(monkeypatch):
  def boom(*a, **k):
    raise AssertionError("compiled before validating")
  monkeypatch.setattr(base, "_jitted", boom)


@pytest.fixture(scope="module")
def codecs():
  return AudioCodec(ACFG, rngs=nnx.Rngs(0)), VideoCodec(VCFG, rngs=nnx.Rngs(0))


def test_audio_bad_inputs(codecs):
  a, _ = codecs
  spu = ACFG.samples_per_unit
  good = np.zeros((1, spu), np.float32)
  st = a.init_state(1)
  cases = [
      (lambda: a.encode(good, sample_rate=24000), r"sample_rate=16000.*received 24000"),
      (lambda: a.encode_step(st, good, sample_rate=8000), r"sample_rate=16000.*received 8000"),
      (lambda: a.encode(good.astype(np.float64)), r"dtype float32.*received float64"),
      (lambda: a.encode((good * 100).astype(np.int16)), r"dtype float32.*received int16"),
      (lambda: a.encode(good[0]), r"\[batch, samples\].*received shape \(2560,\)"),
      (lambda: a.encode(np.zeros((1, 1000), np.float32)), r"multiple of samples_per_frame=640.*1000"),
      (lambda: a.encode_step(st, np.zeros((1, 2 * spu), np.float32)), r"2560 samples.*received 5120"),
      (lambda: a.encode_step(st, np.zeros((1, 640), np.float32)), r"one 160 ms unit.*received 640"),
      (lambda: a.encode(np.where(np.arange(spu) == 7, np.nan, good).astype(np.float32)),
       r"finite.*1 NaN/inf.*index \(0, 7\)"),
      (lambda: a.encode_step(st, np.full((1, spu), np.inf, np.float32)), r"finite.*2560 NaN/inf"),
      (lambda: a.encode_step(a.init_state(2), good), r"init_state\(batch=1\).*batch=2"),
      (lambda: a.decode(np.zeros((1, 4, 3), np.int32)), r"Q=2.*received shape \(1, 4, 3\)"),
      (lambda: a.decode(np.zeros((1, 4, 2), np.float32)), r"integer codes.*received float32"),
      (lambda: a.decode(np.full((1, 4, 2), 5000, np.int32)), r"\[0, 1001\).*\[5000, 5000\]"),
      (lambda: a.decode_step(st, np.zeros((1, 8, 2), np.int32)), r"\[batch, 4, Q=2\].*\(1, 8, 2\)"),
  ]
  for fn, pattern in cases:
    with pytest.raises(ValueError, match=pattern):
      fn()


def test_video_bad_inputs(codecs):
  _, v = codecs
  good = np.zeros((1, 4, 16, 16, 3), np.uint8)
  st = v.init_state(1)
  cases = [
      (lambda: v.encode(good, fps=30), r"fps=25.*received fps=30"),
      (lambda: v.encode(good.astype(np.float32)), r"dtype uint8.*received float32"),
      (lambda: v.encode(np.zeros((1, 4, 32, 16, 3), np.uint8)), r"16, 16, 3\].*\(1, 4, 32, 16, 3\)"),
      (lambda: v.encode(np.zeros((1, 4, 16, 16, 4), np.uint8)), r"16, 16, 3\].*\(1, 4, 16, 16, 4\)"),
      (lambda: v.encode(np.zeros((1, 6, 16, 16, 3), np.uint8)), r"multiple of 4 frames.*received 6"),
      (lambda: v.encode_step(st, np.zeros((1, 8, 16, 16, 3), np.uint8)), r"4 frames.*received 8 frames"),
      (lambda: v.decode(np.zeros((1, 2, 3, 3), np.int32)), r"\[batch, units, 2, 2\].*\(1, 2, 3, 3\)"),
      (lambda: v.decode_step(st, np.zeros((1, 2, 2, 2), np.int32)), r"\[batch, 1, 2, 2\].*\(1, 2, 2, 2\)"),
      (lambda: v.decode(np.full((1, 1, 2, 2), -1, np.int32)), r"\[0, 1001\).*\[-1, -1\]"),
  ]
  for fn, pattern in cases:
    with pytest.raises(ValueError, match=pattern):
      fn()


def test_config_validation_names_fields():
  with pytest.raises(ValueError, match=r"audio.strides.*samples_per_frame=640.*\(4, 4\)"):
    AudioCodecConfig(strides=(4, 4))
  with pytest.raises(ValueError, match=r"audio.channels.*1..2 positive widths"):
    AudioCodecConfig(channels=(1, 2, 3, 4, 5))
  with pytest.raises(ValueError, match=r"video.channels.*at most log2"):
    VideoCodecConfig(height=16, width=16, spatial_stride=2, channels=(4, 8, 16))
  with pytest.raises(ValueError, match=r"video.upsample"):
    VideoCodecConfig(upsample="nearest")
  assert VideoCodecConfig(height=64, width=64, spatial_stride=8, channels=(48, 96)).patch_size == 4
  small = AudioCodecConfig(num_quantizers=4, levels=(8, 5, 5, 5))
  assert small.bitrate_bps <= 1100 and small.tokens_per_unit == 16
