"""The audio codec's harmonic head: YIN F0 targets, the oscillator bank (pitch, harmonics, streaming state), the F0 loss."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wan_streamer_jax.codecs import AudioCodec, training
from wan_streamer_jax.codecs.harmonic import HarmonicHead, f0_loss
from wan_streamer_jax.codecs.pitch import F0_MAX, F0_MIN, CausalPitchFrontend, yin_f0
from wan_streamer_jax.config import AudioCodecConfig, ConfigError, load_config

SR, HOP = 16000, 160


def _buzz(f0, seconds=1.0, amp=0.3):
  """A harmonic-rich tone (19 harmonics, 1/k amplitudes) at `f0` Hz."""
  t = np.arange(int(SR * seconds)) / SR
  return amp * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 20))


def test_yin_finds_the_pitch_of_voiced_tones_and_calls_noise_and_silence_unvoiced():
  f0s = [70.0, 110.0, 220.0, 350.0, 520.0]
  x = np.stack([_buzz(f) for f in f0s] + [0.1 * np.random.default_rng(0).standard_normal(SR), np.zeros(SR)])
  f0, voiced = yin_f0(jnp.asarray(x, jnp.float32), SR, HOP)
  f0, voiced = np.asarray(f0), np.asarray(voiced)
  assert f0.shape == voiced.shape == (7, SR // HOP)
  inner = slice(3, -3)  # the zero-padded ends see half a window
  for i, f in enumerate(f0s):
    np.testing.assert_allclose(f0[i, inner], f, rtol=0.005)
    assert voiced[i, inner].all()
  assert not voiced[5].any() and not voiced[6].any()
  assert (f0 >= F0_MIN).all() and (f0 <= F0_MAX).all()


def test_yin_follows_a_glide_at_the_hop_end():
  """F0 gliding 120 -> 240 Hz: hop t's estimate is the F0 at the end of hop t, (t + 1) * HOP."""
  t = np.arange(SR) / SR
  inst = 120.0 * 2.0 ** t  # one octave per second
  phase = 2 * np.pi * np.cumsum(inst) / SR
  x = 0.3 * sum(np.sin(k * phase) / k for k in range(1, 15))
  f0, _ = yin_f0(jnp.asarray(x[None], jnp.float32), SR, HOP)
  want = 120.0 * 2.0 ** ((np.arange(SR // HOP) + 1) * HOP / SR)
  np.testing.assert_allclose(np.asarray(f0)[0, 3:-3], want[3:-3], rtol=0.01)


def test_the_causal_pitch_frontend_streams_exactly_reads_the_pitch_and_never_looks_ahead():
  front = CausalPitchFrontend(HOP, SR)
  x = np.concatenate([_buzz(150.0, 0.5), np.zeros(SR // 4), _buzz(300.0, 0.5)])[None, :, None].astype(np.float32)
  run = jax.jit(front.__call__)
  feats, _ = run(jnp.asarray(x), front.init_state(1))
  feats = np.asarray(feats)[0]
  assert feats.shape == (x.shape[1] // HOP, 3)
  norm = lambda f: np.log(f / F0_MIN) / np.log(F0_MAX / F0_MIN)
  np.testing.assert_allclose(feats[10:45, 0], norm(150.0), atol=0.005)  # periodic, after one window
  np.testing.assert_allclose(feats[90:120, 0], norm(300.0), atol=0.005)
  assert (feats[10:45, 1] > 0.9).all() and (feats[60:70, 1] < 0.5).all()  # periodicity: tone vs silence
  state, chunks = front.init_state(1), []
  for a in range(0, x.shape[1], 2560):  # one 160 ms unit at a time
    f, state = run(jnp.asarray(x[:, a:a + 2560]), state)
    chunks.append(np.asarray(f)[0])
  np.testing.assert_array_equal(np.concatenate(chunks), feats)
  y = x.copy()
  y[:, 50 * HOP:] = 0.5  # change everything from hop 50 on: hops before it are untouched
  f2 = np.asarray(run(jnp.asarray(y), front.init_state(1))[0])[0]
  np.testing.assert_array_equal(f2[:50], feats[:50])
  assert np.abs(f2[50:] - feats[50:]).max() > 0.1


def _head(harmonics=12, f0_logit=0.0, env=-1.0):
  head = HarmonicHead(8, HOP, SR, harmonics, 161, rngs=nnx.Rngs(0))
  head.proj.kernel[...] = jnp.zeros_like(head.proj.kernel[...])  # output = bias: a fixed F0 and envelope
  head.proj.bias[...] = jnp.concatenate([jnp.full((1,), f0_logit), jnp.full((161,), env)])
  return head


def test_a_fixed_f0_plays_its_harmonics_and_nothing_at_or_above_nyquist():
  head = _head(harmonics=60)
  y, log_f0, _ = head(jnp.zeros((1, 100, 8)))
  f0 = float(np.exp(np.asarray(log_f0)[0, 0]))
  assert F0_MIN < f0 < F0_MAX and np.allclose(np.exp(np.asarray(log_f0)), f0)
  sig = np.asarray(y)[0, 2 * HOP:, 0]  # after the ramp-in of the first hop
  spec = np.abs(np.fft.rfft(sig * np.hanning(sig.size)))
  freqs = np.fft.rfftfreq(sig.size, 1 / SR)
  peak = lambda f: spec[np.argmin(np.abs(freqs - f))]
  audible = [k for k in range(1, 61) if k * f0 < SR / 2 - 50]
  assert len(audible) < 60  # the test covers the Nyquist cut
  floor = np.median(spec)
  for k in audible:
    assert peak(k * f0) > 100 * floor, k
  between = [peak((k + 0.5) * f0) for k in audible[:-1]]
  assert max(between) < 0.05 * min(peak(k * f0) for k in audible)
  # a harmonic at or above Nyquist is silent (it would alias)
  amp = np.asarray(head.amplitudes(jnp.asarray([f0]), jnp.zeros((1, 161))))[0]
  np.testing.assert_array_equal(amp[[k - 1 for k in range(1, 61) if k * f0 >= SR / 2]], 0.0)
  assert (amp[[k - 1 for k in audible]] > 0).all()


def test_the_head_streams_hop_chunks_with_its_carried_state_as_one_offline_call():
  head = HarmonicHead(8, HOP, SR, 16, 161, rngs=nnx.Rngs(1))
  head.proj.bias[...] = head.proj.bias[...].at[1:].set(-1.0)
  head.proj.kernel[...] = head.proj.kernel[...] * 10.0  # F0 varies a lot from hop to hop
  feats = jnp.asarray(np.random.default_rng(0).standard_normal((2, 40, 8)), jnp.float32)
  graphdef, params = nnx.split(head)
  run = jax.jit(lambda p, x, s: nnx.merge(graphdef, p)(x, s))
  y, log_f0, end = run(params, feats, head.init_state(2))
  assert np.ptp(np.asarray(log_f0)) > 0.3  # a real glide, not one constant pitch
  state, ys = head.init_state(2), []
  for a, b in ((0, 16), (16, 17), (17, 33), (33, 40)):
    yc, _, state = run(params, feats[:, a:b], state)
    ys.append(np.asarray(yc))
  np.testing.assert_allclose(np.concatenate(ys, 1), np.asarray(y), atol=1e-5, rtol=0)
  for k in ("phase", "f0", "amp"):
    np.testing.assert_allclose(np.asarray(state[k]), np.asarray(end[k]), atol=1e-6)
  assert (0 <= np.asarray(end["phase"])).all() and (np.asarray(end["phase"]) < 1).all()
  # dropping the state between chunks changes the waveform: the state is what makes it continuous
  y_reset = np.concatenate([np.asarray(run(params, feats[:, a:b], head.init_state(2))[0])
                            for a, b in ((0, 16), (16, 40))], 1)
  assert np.abs(y_reset - np.asarray(y)).max() > 0.05


def test_the_phase_is_continuous_across_hops_when_f0_changes():
  """No click at hop boundaries: the sample-to-sample step stays that of a smooth sinusoid."""
  head = _head(harmonics=1, env=-1.0)
  feats = jnp.asarray(np.linspace(-3, 3, 30)[None, :, None] * np.ones((1, 30, 8)), jnp.float32)
  head.proj.kernel[...] = head.proj.kernel[...].at[:, 0].set(0.5)  # F0 = f(feature): a glide
  y, log_f0, _ = head(feats)
  sig = np.asarray(y)[0, HOP:, 0]
  f_max = float(np.exp(np.asarray(log_f0).max()))
  amp = float(np.abs(sig).max())
  assert np.abs(np.diff(sig)).max() <= 1.1 * 2 * np.pi * f_max / SR * amp


def test_f0_loss_counts_voiced_hops_in_octaves():
  target = jnp.asarray([[100.0, 200.0, 400.0]])
  log_f0 = jnp.log(jnp.asarray([[200.0, 200.0, 100.0]]))
  assert float(f0_loss(log_f0, target, jnp.asarray([[True, True, False]]))) == pytest.approx(0.5)
  assert float(f0_loss(log_f0, target, jnp.asarray([[False, False, True]]))) == pytest.approx(2.0)
  assert float(f0_loss(log_f0, target, jnp.zeros((1, 3), bool))) == 0.0


def _harmonic_config(**train):
  base = load_config("codec_audio_tiny")
  return base.replace(audio=dict(harmonics=8), codec_train=dict(kind="audio", **train))


def test_the_f0_loss_trains_the_whole_codec_so_the_codes_carry_the_pitch():
  cfg = _harmonic_config(f0_weight=1.0)
  codec = training.create_codec(cfg, "audio")
  x = jnp.asarray(np.stack([_buzz(130.0, 0.48), _buzz(260.0, 0.48)]), jnp.float32)
  graphdef, params = nnx.split(codec)
  lf = training.loss_fn("audio", cfg)
  (loss, m), grads = jax.jit(jax.value_and_grad(lambda p: lf(nnx.merge(graphdef, p), {"audio": x}),
                                                has_aux=True))(params)
  assert float(m["voiced_fraction"]) > 0.8 and float(m["f0_octaves"]) > 0
  # the F0 term's own gradient reaches the encoder (through the straight-through FSQ)
  no_f0 = training.loss_fn("audio", cfg.replace(codec_train=dict(f0_weight=0.0)))
  loss0_and_grad = jax.jit(jax.value_and_grad(lambda p: no_f0(nnx.merge(graphdef, p), {"audio": x}), has_aux=True))
  (loss0, m0), g0 = loss0_and_grad(params)
  diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), grads["encoder"], g0["encoder"])
  assert max(jax.tree.leaves(diff)) > 1e-6
  assert float(loss) - float(loss0) == pytest.approx(float(m["f0_octaves"]), rel=1e-4)
  assert "f0_octaves" in m0  # reported whenever the codec has the head, weighted or not


def test_bad_harmonic_settings_are_refused_by_name():
  with pytest.raises(ConfigError, match="audio.harmonics"):
    AudioCodecConfig(harmonics=-1)
  with pytest.raises(ConfigError, match="audio.pitch_input"):
    AudioCodecConfig(pitch_input=True, frontend="conv")
  with pytest.raises(ConfigError, match="codec_train.f0_weight"):
    load_config("codec_audio_tiny").replace(codec_train=dict(f0_weight=-1.0))
  cfg = load_config("codec_audio_tiny").replace(codec_train=dict(kind="audio", f0_weight=1.0))
  with pytest.raises(ConfigError, match=r"f0_weight=1.0 needs a harmonic head .*audio.harmonics=0"):
    training.loss_fn("audio", cfg)


def test_a_codec_without_the_head_is_unchanged():
  cfg = AudioCodecConfig(num_quantizers=2, channels=(16, 32), latent_dim=8)
  assert cfg.harmonics == 0
  codec = AudioCodec(cfg, rngs=nnx.Rngs(0))
  assert codec.decoder.harmonic is None and "harmonic" not in codec.decoder.init_state(1)
  out = codec(jnp.zeros((1, cfg.samples_per_unit)))
  assert out["log_f0"] is None
  with_head = AudioCodec(dataclasses.replace(cfg, harmonics=4), rngs=nnx.Rngs(0))
  assert with_head(jnp.zeros((1, cfg.samples_per_unit)))["log_f0"].shape == (1, cfg.samples_per_unit // HOP)
