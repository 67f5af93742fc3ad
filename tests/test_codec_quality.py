"""Speech-codec scoring: PESQ, Codec2 round trip with its delay removed, the codec_quality benchmark.

Needs Debian's `codec2` package (c2enc / c2dec): `apt-get install -y codec2`.
"""

import numpy as np
import pytest

from data_pipelines import speech
from wan_streamer_jax.codecs import codec2, metrics

SR = 16000


@pytest.fixture(scope="module")
def utterance():
  return speech.get_synthesizer(SR).say("the old clock on the wall stopped at noon.", speech.USER_VOICES[1]).audio


def test_pesq_orders_degradations(utterance):
  x = utterance.astype(np.float64)
  rng = np.random.default_rng(0)
  clean = metrics.pesq(x, x, SR, "wb")
  light = metrics.pesq(x + 0.003 * rng.standard_normal(x.size), x, SR, "wb")
  heavy = metrics.pesq(x + 0.05 * rng.standard_normal(x.size), x, SR, "wb")
  assert clean > 4.4 and clean > light > heavy >= 1.0
  nb = metrics.pesq(x + 0.05 * rng.standard_normal(x.size), x, SR, "nb")
  assert 1.0 <= nb < metrics.pesq(x, x, SR, "nb")
  assert np.isnan(metrics.pesq(np.zeros(SR), np.zeros(SR), SR, "nb"))  # no utterance: missing, not 4.5
  with pytest.raises(ValueError, match="nb|wb"):
    metrics.pesq(x, x, SR, "fb")
  s = metrics.speech_scores(x, x, SR)
  assert set(s) == {"stoi", "pesq_nb", "pesq_wb", "log_mel_distance", "si_snr_db"} and s["stoi"] > 0.99


def test_stoi_bands_split_stoi_by_band(utterance):
  """The bands' mean is pystoi's STOI; loud noise above 1.5 kHz ruins the bands above it, not below."""
  from scipy import signal
  x = utterance.astype(np.float64)
  y = x + 0.02 * np.random.default_rng(1).standard_normal(x.size)
  centres, bands = metrics.stoi_bands(y, x, SR)
  assert len(centres) == len(bands) == 15 and centres[0] == 150 and 3000 < centres[-1] < 4000
  assert float(np.mean(bands)) == pytest.approx(metrics.stoi(y, x, SR), abs=1e-9)
  hiss = signal.sosfilt(signal.butter(8, 1500, "highpass", fs=SR, output="sos"),
                       0.3 * np.random.default_rng(2).standard_normal(x.size))
  _, hb = metrics.stoi_bands(x + hiss, x, SR)
  c = np.asarray(centres)
  assert hb[c < 700].min() > 0.9 and hb[c > 2000].max() < 0.5
  with pytest.raises(ValueError, match="stoi_bands"):
    metrics.stoi_bands(x[:-1], x, SR)


def test_delay_estimate_recovers_a_shift():
  rng = np.random.default_rng(1)
  ref = rng.standard_normal(4000)
  out = np.concatenate([np.zeros(137), ref])[:4000] + 0.1 * rng.standard_normal(4000)
  assert codec2.estimate_delay(out, ref, 400) == 137


def test_codec2_roundtrip_is_aligned_and_rate_ordered(utterance):
  assert codec2.available(), "install Debian's codec2 package (apt-get install -y codec2)"
  c12, c32 = codec2.Codec2(1200), codec2.Codec2(3200)
  d = c12.fixed_delay([utterance], SR)
  assert 0 < d < 0.1 * SR
  y = c12.roundtrip(utterance, SR, delay=d)
  assert y.shape == utterance.shape and y.dtype == np.float32
  aligned = metrics.stoi(y, utterance, SR)
  assert aligned > 0.65 and aligned > metrics.stoi(c12.roundtrip(utterance, SR), utterance, SR) + 0.05
  assert codec2.estimate_delay(y, utterance, 400) == 0
  y32 = c32.roundtrip(utterance, SR, delay=c32.fixed_delay([utterance], SR))
  assert metrics.pesq(y32, utterance, SR, "nb") > metrics.pesq(y, utterance, SR, "nb")
  with pytest.raises(ValueError, match="mode"):
    codec2.Codec2(999)


def test_swap_stft_parts_resynthesises(utterance):
  """A signal swapped with itself comes back; our magnitude with a noise's phase keeps our spectrum's
  shape (its log-mel distance to us is far below the noise's)."""
  from launch.benchmarks.codec_quality import swap_stft_parts
  for same in swap_stft_parts(utterance, utterance, 320, 160):
    np.testing.assert_allclose(same, utterance, atol=1e-5)
  noise = np.random.default_rng(0).normal(0, 0.05, utterance.shape).astype(np.float32)
  mixed = swap_stft_parts(utterance, noise, 320, 160)[0]
  assert metrics.log_mel_distance(mixed, utterance, SR) < 0.5 * metrics.log_mel_distance(noise, utterance, SR)


def test_codec_quality_benchmark_scores_our_codec_and_codec2(tmp_path):
  import os
  import orbax.checkpoint as ocp
  from flax import nnx
  from launch.benchmarks import codec_quality
  from wan_streamer_jax.codecs import training
  from wan_streamer_jax.config import load_config
  sets = [codec_quality.utterance_set(n, 2, SR) for n in codec_quality.SETS]
  again = codec_quality.utterance_set("test_voices", 2, SR)
  for a, b in zip(sets[2], again):
    np.testing.assert_array_equal(a, b)
  assert all(u.shape[0] % 640 == 0 and u.shape[0] > SR for s in sets for u in s)
  cfg = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                                 "codec_audio_tiny.py"))
  _, params = nnx.split(training.create_codec(cfg, "audio"))
  mgr = ocp.CheckpointManager(str(tmp_path / "checkpoints"))
  mgr.save(1, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                      config=ocp.args.JsonSave({"kind": "audio", "config": cfg.to_dict()})))
  mgr.wait_until_finished()
  mgr.close()
  png = str(tmp_path / "spectrograms.png")
  res = codec_quality.run(cfg, audio_codec=str(tmp_path), utterances=2, spectrogram_png=png)
  import matplotlib.image
  assert res["spectrogram_png"] == png
  image = matplotlib.image.imread(png)  # 3 sets x 4 signals: wider than tall, not blank
  assert image.shape[1] > image.shape[0] and float(np.std(image[..., :3])) > 0.05
  for name in codec_quality.SETS:
    entry = res[name]
    assert set(entry) == {"ours", "codec2_1200", "codec2_3200", "ours_minus_codec2_1200", "stoi_bands", "oracle"}
    # an untrained decoder's magnitudes are its main loss: the reference's put back score far higher
    assert entry["oracle"]["reference_magnitude_ours_phase"]["stoi"] > entry["ours"]["stoi"] + 0.1
    bands = entry["stoi_bands"]
    assert len(bands["centre_hz"]) == 15 and bands["centre_hz"][0] == 150
    for codec_name in ("ours", "codec2_1200", "codec2_3200"):  # the bands' mean is the set's STOI
      assert np.mean(bands[codec_name]) == pytest.approx(entry[codec_name]["stoi"], abs=2e-3)
    # an untrained codec is far worse than Codec2: the comparison can fail
    assert entry["ours_minus_codec2_1200"]["stoi"] < 0
    assert entry["codec2_3200"]["pesq_nb"] > entry["ours"]["pesq_nb"]
  assert res["ours_bitrate_bps"] == pytest.approx(cfg.audio.bitrate_bps, abs=0.1)
  with pytest.raises(ValueError, match="audio_codec"):
    codec_quality.run(cfg)
  with pytest.raises(ValueError, match="in_domain"):
    codec_quality.run(cfg, audio_codec=str(tmp_path), sets=("test_voices",))
