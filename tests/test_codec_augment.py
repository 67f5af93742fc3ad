"""Codec-training augmentation: seeded, bounded, each effect does what it says, Grain resume."""

import numpy as np
import pytest
from scipy import signal

from data_pipelines import augment
from data_pipelines.pipelines import raw_pipeline
from wan_streamer_jax.codecs.synthetic import SyntheticSignalSource
from wan_streamer_jax.config import load_config

SR = 16000


def _speech_like(seconds=1.0, seed=0):
  """Harmonic bursts with pauses (voiced-speech-like), peak 0.7."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * SR)) / SR
  f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
  phase = 2 * np.pi * np.cumsum(f0) / SR
  x = sum(np.sin(k * phase) / k for k in range(1, 20))
  x *= (np.sin(2 * np.pi * 2.5 * t) > -0.3)
  x += 0.01 * rng.standard_normal(t.size)
  return (0.7 * x / np.abs(x).max()).astype(np.float32)


def _only(effect, **kw):
  probs = dict(clean_prob=0.0, reverb_prob=0.0, noise_prob=0.0, babble_prob=0.0, eq_prob=0.0, gain_prob=0.0,
               clip_prob=0.0)
  probs.update({f"{effect}_prob": 1.0}, **kw)
  return augment.CodecAugment(SR, **probs)


def _band_energy(x, lo, hi):
  f, p = signal.welch(x, SR, nperseg=1024)
  return float(p[(f >= lo) & (f < hi)].sum())


def test_seeded_bounded_and_padding_kept():
  x = _speech_like()
  x[12000:] = 0.0
  mask = np.array([True] * 4 + [False] * 2)  # 6 units of 2560 samples; 10240 valid
  el = {"audio": np.concatenate([x[:10240], np.zeros(5120, np.float32)]), "unit_mask": mask}
  aug = augment.CodecAugment(SR, clean_prob=0.0)
  outs = [aug.random_map(el, np.random.default_rng(s))["audio"] for s in (0, 0, 1)]
  np.testing.assert_array_equal(outs[0], outs[1])
  assert not np.array_equal(outs[0], outs[2])
  for s in range(12):
    y = aug.random_map(el, np.random.default_rng(s))
    assert y["audio"].dtype == np.float32 and np.isfinite(y["audio"]).all()
    assert np.abs(y["audio"]).max() <= 0.99 + 1e-6
    assert not np.any(y["audio"][10240:])
    assert y["speech_activity"] == pytest.approx(augment.speech_activity(el["audio"], SR))
  clean = augment.CodecAugment(SR, clean_prob=1.0).random_map(el, np.random.default_rng(0))
  np.testing.assert_array_equal(clean["audio"], el["audio"])
  with pytest.raises(ValueError, match="noise_prob"):
    augment.CodecAugment(SR, noise_prob=1.5)


def test_noise_hits_the_drawn_snr_range_and_colours_differ():
  x = _speech_like(2.0).astype(np.float64)
  aug = _only("noise", gain_prob=0.0)
  snrs = []
  for s in range(20):
    y = aug.augment(x, np.random.default_rng(s)).astype(np.float64)
    # remove the level restoration: fit y = a * (x + n)
    a = np.dot(y, x) / np.dot(x, x)
    n = y / a - x
    snrs.append(10 * np.log10(augment._speech_power(x, SR) / np.mean(n ** 2)))
  assert min(snrs) > -1.0 and max(snrs) < 31.0 and max(snrs) - min(snrs) > 10.0
  rng = np.random.default_rng(0)
  brown, blue = augment.coloured_noise(rng, 32000, 2.0), augment.coloured_noise(rng, 32000, -1.0)
  assert _band_energy(brown, 0, 500) > 10 * _band_energy(brown, 4000, 8000)
  assert _band_energy(blue, 4000, 8000) > 10 * _band_energy(blue, 0, 500)


def test_babble_mixes_other_windows():
  other = _speech_like(1.0, seed=5)[::-1].copy()
  calls = []

  def source(rng):
    calls.append(1)
    return other

  aug = augment.CodecAugment(SR, babble_source=source, clean_prob=0.0, reverb_prob=0.0, noise_prob=1.0,
                             babble_prob=1.0, eq_prob=0.0, gain_prob=0.0, clip_prob=0.0)
  x = _speech_like(1.0).astype(np.float64)
  y = aug.augment(x, np.random.default_rng(0))
  assert 2 <= len(calls) <= 5
  resid = y / (np.dot(y, x) / np.dot(x, x)) - x
  assert abs(np.corrcoef(resid, other)[0, 1]) > 0.9  # the residual is the other speech


def test_band_limit_eq_and_reverb_tail():
  x = (np.random.default_rng(0).standard_normal(SR) * 0.2).astype(np.float64)
  aug = _only("eq")
  ratios = [_band_energy(aug.augment(x, np.random.default_rng(s)), 6000, 8000) /
            _band_energy(aug.augment(x, np.random.default_rng(s)), 1000, 3000) for s in range(30)]
  assert min(ratios) < 0.05  # some draws band-limit towards telephone bandwidth
  assert max(ratios) > 0.3  # others keep the full band
  h = augment.room_impulse_response(np.random.default_rng(0), SR, 0.5)
  assert h[0] == 1.0 and h.shape[0] == SR // 2
  late, early = np.sum(h[int(0.3 * SR):] ** 2), np.sum(h[int(0.01 * SR):int(0.1 * SR)] ** 2)
  assert late < early * 0.1  # decays
  burst = np.zeros(SR)
  burst[:800] = _speech_like(0.05)[:800]
  y = _only("reverb").augment(burst, np.random.default_rng(1))
  assert np.sum(y[2000:] ** 2) > 1e-4 * np.sum(y ** 2)  # energy after the burst: the room tail


def test_clipping_flattens_peaks():
  x = _speech_like().astype(np.float64)
  y = _only("clip").augment(x, np.random.default_rng(0))
  top = np.abs(y).max()
  assert np.mean(np.abs(y) >= top - 1e-6) > 0.01  # many samples sit at the clip level


def test_grain_pipeline_with_augment_resumes_exactly():
  cfg = load_config("configs/codec_audio_tiny.py")
  src = SyntheticSignalSource(cfg, 8, units=4)
  aug = augment.CodecAugment(cfg.audio.sample_rate, babble_source=augment.BabbleSource(src, 2 * cfg.audio.samples_per_unit),
                             clean_prob=0.0)

  def make():
    return iter(raw_pipeline(src, cfg, units=2, batch_size=2, seed=3, process_index=0, process_count=1,
                             num_threads=0, prefetch=0, window_map=aug))

  it = make()
  first = next(it)
  assert "speech_activity" in first and first["speech_activity"].shape == (2,)
  state = it.get_state()
  expect = [next(it)["audio"] for _ in range(2)]
  it2 = make()
  it2.set_state(state)
  for e in expect:
    np.testing.assert_array_equal(next(it2)["audio"], e)
  plain = next(iter(raw_pipeline(src, cfg, units=2, batch_size=2, seed=3, process_index=0, process_count=1,
                                 num_threads=0, prefetch=0)))
  assert not np.array_equal(plain["audio"], first["audio"])  # the map ran
