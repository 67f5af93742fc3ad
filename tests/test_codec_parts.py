"""Codec parts: causal conv state/stride/upsampling, FSQ, losses and metrics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wan_streamer_jax.codecs import losses, metrics
from wan_streamer_jax.codecs.causal_conv import (CausalConv, CausalISTFTHead, CausalSTFTFrontend,
                                                 CausalUpsample, depth_to_space, space_to_depth)
from wan_streamer_jax.codecs.fsq import (ResidualFSQ, fsq_bound, fsq_codes_to_values, fsq_quantize,
                                         soft_code_entropy)


@pytest.mark.parametrize("kernel_t,stride,dilation,spatial", [
    (3, 1, 1, ()), (5, 1, 3, ()), (8, 4, 1, ()), (4, 4, 1, (4, 4)), (3, 1, 2, (4, 4))])
def test_causal_conv_chunked_equals_offline(kernel_t, stride, dilation, spatial):
  conv = CausalConv(3, 5, kernel_t, stride=stride, dilation=dilation, kernel_s=3 if spatial else 0,
                    spatial=spatial, rngs=nnx.Rngs(0))
  assert conv.state_len == (kernel_t - 1) * dilation + 1 - stride
  x = jax.random.normal(jax.random.key(1), (2, 12 * stride, *spatial, 3))
  y, _ = conv(x)
  state, ys, t = conv.init_state(2), [], 0
  for n in (1, 3, 2, 6):
    yy, state = conv(x[:, t * stride:(t + n) * stride], state)
    ys.append(yy)
    t += n
  np.testing.assert_allclose(np.concatenate(ys, 1), y, atol=1e-5)
  assert state.shape == conv.init_state(2).shape
  # Causality: output n only sees inputs < (n + 1) * stride.
  x2 = x.at[:, 5 * stride:].set(7.0)
  np.testing.assert_array_equal(conv(x2)[0][:, :5], y[:, :5])


@pytest.mark.parametrize("mode", ["subpixel", "repeat"])
def test_causal_upsample_chunked_and_causal(mode):
  up = CausalUpsample(4, 3, 4, 2, mode=mode, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (1, 10, 4))
  y, _ = up(x)
  assert y.shape == (1, 40, 3)
  state, ys = up.init_state(1), []
  for a, b in ((0, 3), (3, 4), (4, 10)):
    yy, state = up(x[:, a:b], state)
    ys.append(yy)
  np.testing.assert_allclose(np.concatenate(ys, 1), y, atol=1e-5)
  y2, _ = up(x.at[:, 6:].set(3.0))
  np.testing.assert_array_equal(y2[:, :24], y[:, :24])


@pytest.mark.parametrize("phase", ["absolute", "advance"])
def test_stft_frontend_and_istft_head_chunked_and_causal(phase):
  hop = 16
  front, head = CausalSTFTFrontend(hop, 2), CausalISTFTHead(6, hop, 3, phase=phase, rngs=nnx.Rngs(0))
  if phase == "advance":  # a running phase that moves (it starts constant)
    head.advance.kernel[...] = jax.random.normal(jax.random.key(6), head.advance.kernel.shape)
  x = jax.random.normal(jax.random.key(4), (2, 12 * hop, 1))
  f, _ = front(x)
  assert f.shape == (2, 12, hop + 1)
  feats = jax.random.normal(jax.random.key(5), (2, 12, 6))
  y, _ = head(feats)
  assert y.shape == (2, 12 * hop, 1)
  sf, sh, fs, ys = front.init_state(2), head.init_state(2), [], []
  for a, b in ((0, 5), (5, 6), (6, 12)):
    ff, sf = front(x[:, a * hop:b * hop], sf)
    yy, sh = head(feats[:, a:b], sh)
    fs.append(ff)
    ys.append(yy)
  np.testing.assert_allclose(np.concatenate(fs, 1), f, atol=1e-5)
  np.testing.assert_allclose(np.concatenate(ys, 1), y, atol=1e-5)
  np.testing.assert_array_equal(front(x.at[:, 7 * hop:].set(1.0))[0][:, :7], f[:, :7])
  np.testing.assert_array_equal(head(feats.at[:, 7:].set(1.0))[0][:, :7 * hop], y[:, :7 * hop])


def test_istft_head_advance_starts_absolute_and_holds_a_frequency_between_bins():
  """phase="advance" starts equal to the absolute head; one bin whose running phase advances at a
  frequency 15 Hz off its centre synthesises that frequency (the absolute head, phase fixed, its centre)."""
  hop, sr, k, f = 160, 16000, 50, 50 * 50 + 15.0  # bins 50 Hz apart: bin 50 is 2500 Hz
  feats = jax.random.normal(jax.random.key(7), (1, 100, 4))
  absolute = CausalISTFTHead(4, hop, 2, rngs=nnx.Rngs(0))
  advance = CausalISTFTHead(4, hop, 2, phase="advance", rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(advance(feats)[0], absolute(feats)[0])
  peaks = {}
  for name, head in (("absolute", absolute), ("advance", advance)):
    head.proj.kernel[...] = jnp.zeros_like(head.proj.kernel[...])
    head.proj.bias[...] = jnp.full((2 * head.bins,), -30.0).at[k].set(0.0).at[head.bins:].set(0.0)
    if head.advance is not None:
      head.advance.kernel[...] = jnp.zeros_like(head.advance.kernel[...])
      head.advance.bias[...] = jnp.full((head.bins,), 2 * jnp.pi * f * hop / sr - jnp.pi * k)
    y = np.asarray(head(feats)[0])[0, 2 * hop:, 0]
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    peaks[name] = np.fft.rfftfreq(y.size, 1 / sr)[np.argmax(spectrum)]
  assert abs(peaks["advance"] - f) < 3 and abs(peaks["absolute"] - 50 * k) < 3, peaks
  from wan_streamer_jax.config import Config
  with pytest.raises(ValueError, match="audio.istft_phase"):
    Config().replace(audio=dict(istft_phase="relative"))


def test_space_depth_roundtrip():
  x = jnp.arange(2 * 8 * 8 * 3).reshape(2, 8, 8, 3)
  np.testing.assert_array_equal(depth_to_space(space_to_depth(x, 4), 4), x)
  assert space_to_depth(x, 2).shape == (2, 4, 4, 12)


def test_fsq_codes_values_and_straight_through():
  levels = (8, 5, 5, 5)
  z = jax.random.normal(jax.random.key(0), (4000, 4))
  v, c = fsq_quantize(z, levels)
  assert c.dtype == jnp.int32 and int(c.min()) >= 0 and int(c.max()) < 1000
  np.testing.assert_allclose(fsq_codes_to_values(c, levels), v, atol=1e-6)
  assert float(jnp.abs(v).max()) <= 1.0
  assert len(np.unique(np.asarray(c))) > 600  # a unit-scale latent uses most codes
  every = jnp.arange(1000)
  _, back = fsq_quantize(_inverse_bound(fsq_codes_to_values(every, levels), levels), levels)
  np.testing.assert_array_equal(back, every)
  g = jax.grad(lambda z: jnp.sum(fsq_quantize(z, levels)[0]))(z)
  assert bool(jnp.all(g > 0))  # straight-through: gradient of the bound, never zero


def _inverse_bound(values, levels):
  """Latent that FSQ maps exactly onto `values` (for the round-trip check)."""
  lv = jnp.asarray(levels, jnp.float32)
  half_l = (lv - 1) * 1.001 / 2
  offset = jnp.where(lv % 2 == 0, 0.5, 0.0)
  target = values * jnp.floor(lv / 2)
  return jnp.arctanh((target + offset) / half_l) - jnp.arctanh(offset / half_l)


def test_residual_fsq_decode_matches_and_missing_is_neutral():
  rfsq = ResidualFSQ(8, (8, 5, 5, 5), 3, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.key(3), (2, 5, 8))
  zq, codes = rfsq(z)
  assert codes.shape == (2, 5, 3)
  np.testing.assert_allclose(rfsq.decode(codes), zq, atol=1e-5)
  err1 = jnp.mean((rfsq(z)[0] - z) ** 2)
  assert np.isfinite(float(err1))
  missing = codes.at[:, :, 1:].set(1000)
  partial = rfsq.decode(missing)
  first_only = fsq_codes_to_values(codes[..., 0], rfsq.levels) @ rfsq.w_out[0] + rfsq.b_out[0]
  np.testing.assert_allclose(partial, first_only, atol=1e-5)


def test_soft_code_entropy_measures_code_usage_and_its_gradient_spreads_the_codes():
  levels = (8, 5, 5)
  lv = np.asarray(levels)
  half_width = np.floor(lv / 2)
  every = np.stack(np.meshgrid(*[np.arange(n) for n in levels], indexing="ij"), -1).reshape(-1, 3)
  centred = jnp.asarray(every - half_width, jnp.float32)  # each code once, digits at the level centres
  assert float(soft_code_entropy(centred, levels, temperature=0.05)) > 0.99
  one = jnp.zeros((64, 3))
  assert float(soft_code_entropy(one, levels, temperature=0.05)) < 0.01
  # Half the codes used equally: log(100) / log(200) of the maximum.
  half = centred[: every.shape[0] // 2]
  np.testing.assert_allclose(float(soft_code_entropy(half, levels, temperature=0.05)),
                             np.log(half.shape[0]) / np.log(every.shape[0]), atol=0.01)
  # A mask restricts the histogram: only zeros counted -> 0; zeros masked out -> every code again.
  mixed = jnp.concatenate([centred, jnp.zeros((200, 3))])
  mask = jnp.arange(mixed.shape[0]) < every.shape[0]
  assert float(soft_code_entropy(mixed, levels, temperature=0.05, mask=~mask)) < 0.01
  assert float(soft_code_entropy(mixed, levels, temperature=0.05, mask=mask)) > 0.99
  assert float(soft_code_entropy(mixed, levels, temperature=0.05)) < 0.95
  # The hard code histogram agrees: fsq_quantize of these digits gives the codes counted.
  z = jnp.asarray(np.random.default_rng(0).normal(0.0, 0.2, (256, 3)), jnp.float32)  # squeezed near 0
  ent = lambda z: soft_code_entropy(fsq_bound(z, levels), levels)
  step = z
  for _ in range(10):  # ascent (the batch mean makes each position's gradient ~1/256) spreads the digits
    step = step + 100.0 * jax.grad(ent)(step)
  assert float(ent(step)) > float(ent(z)) + 0.02
  codes = lambda z: len(np.unique(np.asarray(fsq_quantize(z, levels)[1])))
  assert codes(step) > codes(z)


def test_entropy_weight_adds_the_usage_term_to_the_codec_loss():
  from wan_streamer_jax.codecs import AudioCodec, training
  from wan_streamer_jax.config import AudioCodecConfig, Config
  arch = dict(sample_rate=16000, num_quantizers=2, channels=(8, 16), strides=(160, 4), dilations=(1,), latent_dim=8)
  model = AudioCodec(AudioCodecConfig(**arch), rngs=nnx.Rngs(0))
  x = {"audio": jnp.asarray(0.1 * np.random.default_rng(1).standard_normal((2, 2560)), jnp.float32)}
  base = Config().replace(audio=arch, codec_train=dict(kind="audio"))
  loss0, m0 = training.loss_fn("audio", base)(model, x)
  loss1, m1 = training.loss_fn("audio", base.replace(codec_train=dict(kind="audio", entropy_weight=2.0)))(model, x)
  ent = np.array([float(m0["code_entropy/q0"]), float(m0["code_entropy/q1"])])
  assert np.all((ent > 0) & (ent < 1))
  np.testing.assert_allclose(float(loss1) - float(loss0), 2.0 * np.mean(1.0 - ent), rtol=1e-4)
  with pytest.raises(ValueError, match="codec_train.entropy_weight"):
    base.replace(codec_train=dict(kind="audio", entropy_weight=-1.0))


def test_audio_losses_and_metrics():
  rng = np.random.default_rng(0)
  t = np.arange(16000) / 16000
  clean = (0.5 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)[None]
  noisy = (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
  loss0, _ = losses.audio_loss(jnp.asarray(clean), jnp.asarray(clean), sample_rate=16000)
  loss1, parts = losses.audio_loss(jnp.asarray(noisy), jnp.asarray(clean), sample_rate=16000)
  assert float(loss0) < 1e-3 < float(loss1) and set(parts) == {"l1", "mr_stft", "mel"}
  assert metrics.si_snr(clean, clean) > 60
  assert 5 < metrics.si_snr(noisy, clean) < 25
  assert metrics.stoi(clean, clean, 16000) > 0.99
  assert metrics.stoi(noisy, clean, 16000) < metrics.stoi(clean, clean, 16000)
  assert metrics.log_mel_distance(clean, clean, 16000) < 1e-6 < metrics.log_mel_distance(noisy, clean, 16000)


def test_log_floor_sets_what_the_log_terms_see():
  """Faint noise (-80 dBFS) in a tone's silent half costs the log terms far more under a 10x lower
  floor (the floor is where they stop seeing energy); the floor is validated by name."""
  from wan_streamer_jax.config import Config
  rng = np.random.default_rng(2)
  t = np.arange(8000) / 16000
  clean = (0.3 * np.sin(2 * np.pi * 220 * t) * (t < 0.25)).astype(np.float32)[None]
  faint = (clean + 1e-4 * rng.standard_normal(clean.shape)).astype(np.float32)
  def parts(floor):
    return losses.audio_loss(jnp.asarray(faint), jnp.asarray(clean), sample_rate=16000, log_floor=floor)[1]
  default, low = parts(losses.LOG_FLOOR), parts(losses.LOG_FLOOR / 10)
  for name in ("mr_stft", "mel"):
    assert float(low[name]) > 3 * float(default[name]) > 0, name
  assert float(low["l1"]) == float(default["l1"])
  assert Config().replace(codec_train=dict(kind="audio", log_floor=1e-3)).codec_train.log_floor == 1e-3
  with pytest.raises(ValueError, match="codec_train.log_floor"):
    Config().replace(codec_train=dict(kind="audio", log_floor=0.0))


@pytest.mark.parametrize("part,field", [("mr_stft", "stft_high_weight"), ("mel", "mel_high_weight")])
def test_high_weights_move_the_log_losses_to_the_telephone_band(part, field):
  """An error tone at 6 kHz costs the log-STFT / log-mel term less under its high weight < 1, one at
  1 kHz more (a weighted mean); weight 1 is the plain mean; negative weights are refused by name."""
  from wan_streamer_jax.config import Config
  t = np.arange(8000) / 16000
  speech = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)[None]
  def term(err_hz, weight):
    recon = speech + (0.05 * np.sin(2 * np.pi * err_hz * t)).astype(np.float32)
    return float(losses.audio_loss(jnp.asarray(recon), jnp.asarray(speech), sample_rate=16000,
                                   **{field: weight})[1][part])
  assert term(6000, 0.25) < 0.9 * term(6000, 1.0)
  assert term(1000, 0.25) > 1.1 * term(1000, 1.0)
  loss_fn = losses.multi_resolution_stft_loss if part == "mr_stft" else functools.partial(
      losses.multi_resolution_mel_loss, sample_rate=16000)
  plain = float(loss_fn(jnp.asarray(speech + 0.01), jnp.asarray(speech)))
  assert abs(plain - float(loss_fn(jnp.asarray(speech + 0.01), jnp.asarray(speech), high_weight=1.0))) < 1e-7
  with pytest.raises(ValueError, match=f"codec_train.{field}"):
    Config().replace(codec_train=dict(kind="audio", **{field: -0.5}))


def test_phase_derivative_loss_sees_incoherent_phase_not_a_phase_offset():
  """0 for the target itself and ~0 for the same tones at another constant phase (the derivatives
  ignore the time origin's phase); near the random-phase value (4 / pi) for noise under the same
  envelope; finite gradients; a negative codec_train.phase_weight is refused by name."""
  from wan_streamer_jax.config import Config
  t = np.arange(16000) / 16000
  tones = lambda phi: sum(np.sin(2 * np.pi * f * t + phi) / k for k, f in enumerate((210, 630, 1470, 2730), 1))
  target = jnp.asarray(0.2 * tones(0.0), jnp.float32)[None]
  shifted = jnp.asarray(0.2 * tones(1.3), jnp.float32)[None]
  from scipy import signal
  spec = signal.stft(np.asarray(target[0]), nperseg=320, noverlap=160)[2]  # a random phase per hop and bin
  spec = np.abs(spec) * np.exp(2j * np.pi * np.random.default_rng(0).random(spec.shape))
  noisy_phase = jnp.asarray(signal.istft(spec, nperseg=320, noverlap=160)[1][:16000], jnp.float32)[None]
  loss = lambda r: float(losses.phase_derivative_loss(r, target, 320, 160))
  assert loss(target) < 1e-3 and loss(shifted) < 0.05
  assert loss(noisy_phase) > 0.8
  grad = jax.grad(lambda r: losses.phase_derivative_loss(r, target, 320, 160))(noisy_phase)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0
  parts = losses.audio_loss(noisy_phase, target, sample_rate=16000, phase=2.0)[1]
  assert "phase" in parts and "phase" not in losses.audio_loss(noisy_phase, target, sample_rate=16000)[1]
  with pytest.raises(ValueError, match="codec_train.phase_weight"):
    Config().replace(codec_train=dict(kind="audio", phase_weight=-1.0))


def test_mel_centres_are_the_filter_peaks():
  """`mel_centres_hz` (what mel_high_weight splits on) is where each mel filter peaks."""
  fb = losses.mel_filterbank(16000, 2048, 64)
  peaks = np.argmax(fb, axis=0) * 16000 / 2048
  np.testing.assert_allclose(peaks, losses.mel_centres_hz(16000, 64), atol=16000 / 2048)


def test_video_losses_and_metrics():
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, (2, 4, 16, 16, 3)).astype(np.uint8)
  noisy = np.clip(x + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8)
  assert metrics.psnr(x, x) > 90
  assert 25 < metrics.psnr(noisy, x) < 35
  assert abs(metrics.ssim(x, x) - 1) < 1e-5 and metrics.ssim(noisy, x) < 0.999
  xf = jnp.asarray(x, jnp.float32) / 127.5 - 1
  loss, parts = losses.video_loss(xf, xf)
  assert float(loss) < 1e-5 and abs(float(parts["ssim"]) - 1) < 1e-5


def test_contrast_weighted_video_loss_weighs_the_object_that_stands_out():
  # a flat grey wall with a small red square: the square's pixels weigh most, the wall ~1
  frame = np.full((1, 1, 16, 16, 3), -0.1, np.float32)
  frame[..., 10:14, 10:14, :] = np.array([0.7, -0.8, -0.8], np.float32)
  w = np.asarray(losses.contrast_weights(jnp.asarray(frame), 4.0))[0, 0, ..., 0]
  assert w.shape == (16, 16)
  assert w[12, 12] > 3.0 and abs(w[0, 0] - 1.0) < 0.2, (w[12, 12], w[0, 0])
  target = jnp.asarray(frame)
  erased = target.at[..., 10:14, 10:14, :].set(-0.1)  # the square dropped
  blurred = target + 0.05 * jnp.asarray(np.random.default_rng(0).normal(size=frame.shape), jnp.float32)
  plain = [float(losses.video_loss(r, target, ssim_weight=0.0)[0]) for r in (erased, blurred)]
  weighted = [float(losses.video_loss(r, target, ssim_weight=0.0, contrast_weight=4.0)[0])
              for r in (erased, blurred)]
  # weighting raises the price of dropping the object relative to small errors everywhere
  assert weighted[0] / weighted[1] > 1.5 * plain[0] / plain[1], (plain, weighted)
  # without it the loss is unchanged; the reported parts stay the unweighted means
  loss0, parts0 = losses.video_loss(erased, target, ssim_weight=0.0)
  _, parts4 = losses.video_loss(erased, target, ssim_weight=0.0, contrast_weight=4.0)
  assert abs(float(loss0) - float(parts0["l1"] + parts0["l2"])) < 1e-6
  assert abs(float(parts4["l1"]) - float(parts0["l1"])) < 1e-7
  # a perfect reconstruction costs nothing either way
  assert float(losses.video_loss(target, target, ssim_weight=0.0, contrast_weight=4.0)[0]) < 1e-7


def test_codebook_usage():
  codes = np.stack([np.arange(1000), np.zeros(1000, int)], -1)
  u = metrics.codebook_usage(codes, 1000)
  np.testing.assert_allclose(u["perplexity"], [1000, 1], rtol=1e-6)
  np.testing.assert_allclose(u["used_fraction"], [1.0, 0.001])
