"""Codecs: streaming (unit by unit, any split, inside lax.scan) == offline; nothing looks ahead."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wan_streamer_jax.codecs import AudioCodec, CodecState, VideoCodec, base
from wan_streamer_jax.config import AudioCodecConfig, VideoCodecConfig

# The default architecture (STFT front-end, 10 ms hops, 40 ms frames, iSTFT head), narrow.
AUDIO_CFG = AudioCodecConfig(sample_rate=16000, num_quantizers=2, channels=(16, 32), strides=(160, 4),
                             dilations=(1, 3), latent_dim=8)
VIDEO_CFG = VideoCodecConfig(height=16, width=16, spatial_stride=8, channels=(8, 16))
SPU = AUDIO_CFG.samples_per_unit


def _spread(param, factor):
  """Widen the FSQ projections so random-init codes vary a lot (a stronger equality test)."""
  param[...] = param[...] * factor


@pytest.fixture(scope="module", params=[0, 16], ids=["istft", "pitch+harmonic+advance"])
def audio(request):
  """The default architecture, and the same with causal pitch features into the encoder
  (audio.pitch_input), a 16-oscillator harmonic head (audio.harmonics) and the iSTFT head's
  running phase (audio.istft_phase="advance")."""
  cfg = dataclasses.replace(AUDIO_CFG, harmonics=request.param, pitch_input=bool(request.param),
                            istft_phase="advance" if request.param else "absolute")
  codec = AudioCodec(cfg, rngs=nnx.Rngs(0))
  _spread(codec.quantizer.w_in, 3.0)
  if request.param:  # audible harmonics, so that a dropped phase / F0 / amplitude state shows
    codec.decoder.harmonic.proj.bias[...] = codec.decoder.harmonic.proj.bias[...].at[1:].set(-2.0)
    head = codec.decoder.ups[-1]  # a running phase that moves (it starts constant)
    head.advance.kernel[...] = jax.random.normal(jax.random.key(3), head.advance.kernel.shape)
  fns, params = codec.functional()
  return codec, fns, params


@pytest.fixture(scope="module")
def video():
  codec = VideoCodec(VIDEO_CFG, rngs=nnx.Rngs(1))
  _spread(codec.quantizer.w_in, 3.0)
  fns, params = codec.functional()
  return codec, fns, params


def _atol(codec) -> float:
  """Streaming == offline to float rounding. A harmonic head integrates F0 into its phase, so a
  rounding difference of the F0 (eager op-by-op vs one fused jit: ~1e-7 relative) grows to ~1e-4
  over a few units at an output of amplitude ~2; a dropped or wrong state is O(1) off."""
  return 1e-3 if codec.cfg.harmonics else 1e-5


def _speechlike(rng, batch, n):
  t = np.arange(n) / 16000.0
  f0 = rng.uniform(100, 300, (batch, 1))
  env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6, (batch, 1)) * t)
  x = 0.3 * env * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal((batch, n))
  return x.astype(np.float32)


def _random_splits(rng, units, max_chunk=3):
  """Random chunk sizes (in units) summing to `units` (<= max_chunk each: bounded recompiles)."""
  sizes = []
  while sum(sizes) < units:
    sizes.append(int(rng.integers(1, min(max_chunk, units - sum(sizes)) + 1)))
  return sizes


def test_audio_unit_steps_equal_offline(audio):
  codec, fns, params = audio
  rng = np.random.default_rng(0)
  units = int(rng.integers(3, 6))
  x = _speechlike(rng, 2, units * SPU)
  codes = np.asarray(codec.encode(x))
  assert codes.shape == (2, units * 4, 2) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < AUDIO_CFG.codebook_size
  assert len(np.unique(codes)) > 10
  y = np.asarray(codec.decode(codes, raw=True))
  assert y.shape == x.shape

  state = codec.init_state(2)
  step_codes, step_y = [], []
  for u in range(units):
    state, c = codec.encode_step(state, x[:, u * SPU:(u + 1) * SPU])
    step_codes.append(np.asarray(c))
  for u in range(units):
    state, yu = codec.decode_step(state, codes[:, 4 * u:4 * u + 4], raw=True)
    step_y.append(np.asarray(yu))
  np.testing.assert_array_equal(np.concatenate(step_codes, 1), codes)
  np.testing.assert_allclose(np.concatenate(step_y, 1), y, atol=_atol(codec), rtol=0)

  # Random splits into multi-unit chunks through the jitted pure core (state carried).
  enc, dec = fns.init_state(2).encoder, fns.init_state(2).decoder
  enc_fn = base._jitted(fns.graphdef, "encode_chunk", False)
  dec_fn = base._jitted(fns.graphdef, "decode_chunk", False)
  got_c, got_y, u0 = [], [], 0
  for n in _random_splits(rng, units):
    c, enc = enc_fn(params, jnp.asarray(x[:, u0 * SPU:(u0 + n) * SPU]), enc)
    yy, dec = dec_fn(params, jnp.asarray(codes[:, 4 * u0:4 * (u0 + n)]), dec)
    got_c.append(np.asarray(c))
    got_y.append(np.asarray(yy))
    u0 += n
  np.testing.assert_array_equal(np.concatenate(got_c, 1), codes)
  np.testing.assert_allclose(np.concatenate(got_y, 1), y, atol=_atol(codec), rtol=0)


def test_audio_steps_inside_scan(audio):
  codec, fns, params = audio
  rng = np.random.default_rng(1)
  units = 4
  x = _speechlike(rng, 1, units * SPU)
  codes = np.asarray(codec.encode(x))
  y = np.asarray(codec.decode(codes, raw=True))

  @jax.jit
  def run(params, x_units, code_units):
    def body(state, inp):
      xu, cu = inp
      state, c = fns.encode_step(params, state, xu)
      state, yu = fns.decode_step(params, state, cu, raw=True)
      return state, (c, yu)
    _, out = jax.lax.scan(body, fns.init_state(1), (x_units, code_units))
    return out

  x_units = jnp.asarray(x.reshape(1, units, SPU).transpose(1, 0, 2))
  c_units = jnp.asarray(codes.reshape(1, units, 4, 2).transpose(1, 0, 2, 3))
  c, yy = run(params, x_units, c_units)
  np.testing.assert_array_equal(np.asarray(c).transpose(1, 0, 2, 3).reshape(codes.shape), codes)
  np.testing.assert_allclose(np.asarray(yy).transpose(1, 0, 2).reshape(y.shape), y, atol=_atol(codec), rtol=0)


def test_audio_steps_export_and_reload(audio):
  """The pure steps serialise with jax.export (flat params) and the reloaded steps agree."""
  codec, fns, params = audio
  flat = fns.flat_params(params)
  assert all(isinstance(k, str) for k in flat) and "encoder/out/kernel" in flat
  x = jnp.asarray(_speechlike(np.random.default_rng(5), 1, SPU))
  st = fns.init_state(1)
  enc = jax.export.deserialize(jax.export.export(jax.jit(fns.encode_step))(flat, st, x).serialize())
  st1, codes = enc.call(flat, st, x)
  st_ref, codes_ref = fns.encode_step(params, st, x)
  np.testing.assert_array_equal(codes, codes_ref)
  assert isinstance(st1, CodecState)
  dec = jax.export.deserialize(jax.export.export(jax.jit(fns.decode_step))(flat, st1, codes).serialize())
  _, y = dec.call(flat, st1, codes)
  np.testing.assert_allclose(y, fns.decode_step(params, st1, codes)[1], atol=_atol(codec))


def test_audio_no_look_ahead(audio):
  codec, _, _ = audio
  rng = np.random.default_rng(2)
  x = _speechlike(rng, 1, 3 * SPU)
  spf = AUDIO_CFG.samples_per_frame
  cut_frame = 5  # perturb everything from frame 5 (inside unit 1) on
  x2 = x.copy()
  x2[:, cut_frame * spf:] = rng.uniform(-1, 1, x2[:, cut_frame * spf:].shape)
  c1, c2 = np.asarray(codec.encode(x)), np.asarray(codec.encode(x2))
  np.testing.assert_array_equal(c1[:, :cut_frame], c2[:, :cut_frame])
  assert (c1[:, cut_frame:] != c2[:, cut_frame:]).any()
  c3 = c1.copy()
  c3[:, cut_frame:] = rng.integers(0, AUDIO_CFG.codebook_size, c3[:, cut_frame:].shape)
  y1, y3 = np.asarray(codec.decode(c1, raw=True)), np.asarray(codec.decode(c3, raw=True))
  np.testing.assert_array_equal(y1[:, :cut_frame * spf], y3[:, :cut_frame * spf])
  assert np.abs(y1[:, cut_frame * spf:] - y3[:, cut_frame * spf:]).max() > 0


def _video_clip(rng, batch, frames, h=16, w=16):
  """Moving coloured squares on a gradient background."""
  yy, xx = np.mgrid[0:h, 0:w]
  out = np.zeros((batch, frames, h, w, 3), np.uint8)
  for b in range(batch):
    col = rng.integers(0, 256, 3)
    for t in range(frames):
      img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 80)], -1)
      cx, cy = (3 + t + b) % (w - 4), (2 + 2 * t) % (h - 4)
      img[cy:cy + 4, cx:cx + 4] = col
      out[b, t] = img
  return out


def test_video_unit_steps_equal_offline(video):
  codec, fns, params = video
  rng = np.random.default_rng(3)
  units = int(rng.integers(3, 6))
  x = _video_clip(rng, 2, 4 * units)
  codes = np.asarray(codec.encode(x))
  assert codes.shape == (2, units, 2, 2) and codes.dtype == np.int32
  assert len(np.unique(codes)) > 4
  y = np.asarray(codec.decode(codes, raw=True))
  assert y.shape == x.shape and y.dtype == np.float32
  assert codec.decode(codes).dtype == jnp.uint8

  state = codec.init_state(2)
  sc, sy = [], []
  for u in range(units):
    state, c = codec.encode_step(state, x[:, 4 * u:4 * u + 4])
    sc.append(np.asarray(c))
  for u in range(units):
    state, yu = codec.decode_step(state, codes[:, u:u + 1], raw=True)
    sy.append(np.asarray(yu))
  np.testing.assert_array_equal(np.concatenate(sc, 1), codes)
  np.testing.assert_allclose(np.concatenate(sy, 1), y, atol=1e-5, rtol=0)

  st = fns.init_state(2)
  enc, dec = st.encoder, st.decoder
  enc_fn = base._jitted(fns.graphdef, "encode_chunk", False)
  dec_fn = base._jitted(fns.graphdef, "decode_chunk", False)
  got_c, got_y, u0 = [], [], 0
  for n in _random_splits(rng, units):
    c, enc = enc_fn(params, jnp.asarray(x[:, 4 * u0:4 * (u0 + n)]), enc)
    yy, dec = dec_fn(params, jnp.asarray(codes[:, u0:u0 + n]), dec)
    got_c.append(np.asarray(c))
    got_y.append(np.asarray(yy))
    u0 += n
  np.testing.assert_array_equal(np.concatenate(got_c, 1), codes)
  np.testing.assert_allclose(np.concatenate(got_y, 1), y, atol=1e-5, rtol=0)


def test_video_steps_inside_scan_and_no_look_ahead(video):
  codec, fns, params = video
  rng = np.random.default_rng(4)
  units = 3
  x = _video_clip(rng, 1, 4 * units)
  codes = np.asarray(codec.encode(x))
  y = np.asarray(codec.decode(codes, raw=True))

  @jax.jit
  def run(params, x_units, c_units):
    def body(state, inp):
      state, c = fns.encode_step(params, state, inp[0])
      state, yu = fns.decode_step(params, state, inp[1], raw=True)
      return state, (c, yu)
    return jax.lax.scan(body, fns.init_state(1), (x_units, c_units))[1]

  xu = jnp.asarray(x.reshape(1, units, 4, 16, 16, 3).swapaxes(0, 1))
  cu = jnp.asarray(codes.reshape(1, units, 1, 2, 2).swapaxes(0, 1))
  c, yy = run(params, xu, cu)
  np.testing.assert_array_equal(np.asarray(c).swapaxes(0, 1).reshape(codes.shape), codes)
  np.testing.assert_allclose(np.asarray(yy).swapaxes(0, 1).reshape(y.shape), y, atol=1e-5, rtol=0)

  # No look-ahead: a unit's latent sees only that unit's and earlier frames.
  x2 = x.copy()
  x2[:, 6:] = rng.integers(0, 256, x2[:, 6:].shape)  # perturb from frame 2 of unit 1
  c2 = np.asarray(codec.encode(x2))
  np.testing.assert_array_equal(codes[:, :1], c2[:, :1])
  assert (codes[:, 1:] != c2[:, 1:]).any()
  c3 = codes.copy()
  c3[:, 1:] = (c3[:, 1:] + 17) % VIDEO_CFG.codebook_size
  y3 = np.asarray(codec.decode(c3, raw=True))
  np.testing.assert_array_equal(y[:, :4], y3[:, :4])
  assert np.abs(y[:, 4:] - y3[:, 4:]).max() > 0


def test_state_is_fixed_shape_and_carried(audio, video):
  for codec, chunk in ((audio[0], np.zeros((1, SPU), np.float32)),
                       (video[0], np.zeros((1, 4, 16, 16, 3), np.uint8))):
    st = codec.init_state(1)
    assert isinstance(st, CodecState)
    st2, _ = codec.encode_step(st, chunk)
    assert jax.tree.map(lambda a: a.shape, st) == jax.tree.map(lambda a: a.shape, st2)
