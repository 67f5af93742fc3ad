"""Causal audio codec: waveform `[batch, samples]` float32 in [-1, 1] <-> codes `[batch, frames, Q]` int32.

Frames are 40 ms (25 Hz; `samples_per_frame = sample_rate / 25`), 4 per 160 ms
unit. Every layer is causal along time (`causal_conv.py`): the codes of frame
`n` depend on samples up to the end of frame `n`, the decoded samples of frame
`n` on codes up to frame `n`. Nothing looks ahead, so streaming one unit at a
time with the carried state equals the offline call.

    encoder: causal log-magnitude STFT (hop s_0; `frontend="stft"`; with `pitch_input` also causal
             YIN pitch features per hop, `pitch.CausalPitchFrontend`) + 1x1 conv, or a learned
             causal strided conv (kernel 2*s_0); then per further stride s_i: causal strided conv
             (kernel 2*s_i); residual units after each -> causal conv to `latent_dim`
             -> residual FSQ (Q stages of `levels`)
    decoder: causal conv from `latent_dim` -> for each stage in reverse: residual units
             -> causal upsample by s_i (subpixel, kernel 2 = transposed conv with overlap); the
             last stage is a causal inverse STFT head (`head="istft"`: log-magnitude + phase)
             or a causal upsampling conv (`head="conv"`); with `harmonics > 0` a harmonic
             oscillator bank (`harmonic.py`: F0 + spectral envelope per hop) reads the same
             last-stage features and its waveform is added
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from wan_streamer_jax.codecs.base import (CodecState, StreamingCodec, check_dtype, check_finite,
                                          check_int_codes)
from wan_streamer_jax.codecs.causal_conv import (CausalConv, CausalISTFTHead, CausalSTFTFrontend,
                                                 CausalUpsample, ResBlock)
from wan_streamer_jax.codecs.fsq import ResidualFSQ
from wan_streamer_jax.codecs.harmonic import HarmonicHead
from wan_streamer_jax.codecs.pitch import CausalPitchFrontend
from wan_streamer_jax.config import AudioCodecConfig

SPEECH_RMS = 0.02  # a 40 ms frame with this RMS is speech, not the corpus' microphone noise


class AudioEncoder(nnx.Module):
  """`[B, T, 1]` -> latent `[B, T / samples_per_frame, latent_dim]`."""

  def __init__(self, cfg: AudioCodecConfig, *, rngs: nnx.Rngs):
    chans = cfg.stage_channels
    self.downs = nnx.List()
    self.blocks = nnx.List()
    cin = 1
    self.frontend = CausalSTFTFrontend(cfg.strides[0], cfg.fft_overlap) if cfg.frontend == "stft" else None
    self.pitch = CausalPitchFrontend(cfg.strides[0], cfg.sample_rate) if cfg.pitch_input else None
    for i, (s, c) in enumerate(zip(cfg.strides, chans)):
      if i == 0 and self.frontend is not None:  # log-magnitude frames (+ pitch features) -> C0 (1x1)
        extra = CausalPitchFrontend.features if self.pitch is not None else 0
        self.downs.append(CausalConv(self.frontend.bins + extra, c, 1, rngs=rngs))
      else:
        self.downs.append(CausalConv(cin, c, 2 * s, stride=s, rngs=rngs))
      self.blocks.append(nnx.List([ResBlock(c, cfg.kernel_t, dilation=d, norm=cfg.res_norm, rngs=rngs) for d in cfg.dilations]))
      cin = c
    self.out = CausalConv(cin, cfg.latent_dim, cfg.kernel_t, rngs=rngs)

  def init_state(self, batch: int):
    state = {"frontend": self.frontend.init_state(batch) if self.frontend is not None else None,
             "downs": [d.init_state(batch) for d in self.downs],
             "blocks": [[b.init_state(batch) for b in stage] for stage in self.blocks],
             "out": self.out.init_state(batch)}
    if self.pitch is not None:
      state["pitch"] = self.pitch.init_state(batch)
    return state

  def __call__(self, x, state):
    new = {"frontend": None, "downs": [], "blocks": [], "out": None}
    if self.frontend is not None:
      wave = x
      x, new["frontend"] = self.frontend(wave, state["frontend"])
      if self.pitch is not None:
        p, new["pitch"] = self.pitch(wave, state["pitch"])
        x = jnp.concatenate([x, p], axis=-1)
    for i, (down, stage) in enumerate(zip(self.downs, self.blocks)):
      x, s = down(x if i == 0 else jax.nn.silu(x), state["downs"][i])
      new["downs"].append(s)
      stage_states = []
      for blk, bs in zip(stage, state["blocks"][i]):
        x, s = blk(x, bs)
        stage_states.append(s)
      new["blocks"].append(stage_states)
    z, new["out"] = self.out(jax.nn.silu(x), state["out"])
    return z, new


class AudioDecoder(nnx.Module):
  """latent `[B, F, latent_dim]` -> (`[B, F * samples_per_frame, 1]`, state, log F0 `[B, F * strides[1:]]`
  at hop rate, or None without a harmonic head)."""

  def __init__(self, cfg: AudioCodecConfig, *, rngs: nnx.Rngs):
    chans = cfg.stage_channels
    self.inp = CausalConv(cfg.latent_dim, chans[-1], cfg.kernel_t, rngs=rngs)
    self.blocks = nnx.List()
    self.ups = nnx.List()
    for i in reversed(range(len(cfg.strides))):
      c_out = chans[i - 1] if i > 0 else 1
      self.blocks.append(nnx.List([ResBlock(chans[i], cfg.kernel_t, dilation=d, norm=cfg.res_norm, rngs=rngs)
                                   for d in cfg.dilations]))
      if i == 0 and cfg.head == "istft":
        self.ups.append(CausalISTFTHead(chans[0], cfg.strides[0], cfg.fft_overlap, phase=cfg.istft_phase,
                                        rngs=rngs))
      else:
        self.ups.append(CausalUpsample(chans[i], c_out, cfg.strides[i], 2, mode=cfg.upsample,
                                       init_scale=1.4 if i > 0 else 0.1, rngs=rngs))  # waveform starts quiet
    self.harmonic = (HarmonicHead(chans[0], cfg.strides[0], cfg.sample_rate, cfg.harmonics,
                                  cfg.strides[0] * cfg.fft_overlap // 2 + 1, rngs=rngs)
                     if cfg.harmonics else None)

  def init_state(self, batch: int):
    state = {"inp": self.inp.init_state(batch),
             "blocks": [[b.init_state(batch) for b in stage] for stage in self.blocks],
             "ups": [u.init_state(batch) for u in self.ups]}
    if self.harmonic is not None:
      state["harmonic"] = self.harmonic.init_state(batch)
    return state

  def __call__(self, z, state):
    new = {"inp": None, "blocks": [], "ups": []}
    x, new["inp"] = self.inp(z, state["inp"])
    for i, (stage, up) in enumerate(zip(self.blocks, self.ups)):
      stage_states = []
      for blk, bs in zip(stage, state["blocks"][i]):
        x, s = blk(x, bs)
        stage_states.append(s)
      new["blocks"].append(stage_states)
      h = jax.nn.silu(x)
      x, s = up(h, state["ups"][i])
      new["ups"].append(s)
    if self.harmonic is None:
      return x, new, None
    y_h, log_f0, new["harmonic"] = self.harmonic(h, state["harmonic"])  # the last stage's hop-rate features
    return x + y_h, new, log_f0


class AudioCodec(StreamingCodec):
  """Streaming audio codec (Flax NNX). See the module docstring and `base.py` for the API."""

  def __init__(self, cfg: AudioCodecConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = AudioEncoder(cfg, rngs=rngs)
    self.quantizer = ResidualFSQ(cfg.latent_dim, cfg.levels, cfg.num_quantizers, rngs=rngs)
    self.decoder = AudioDecoder(cfg, rngs=rngs)

  # --- core (traceable) -----------------------------------------------------
  def init_state(self, batch: int) -> CodecState:
    return CodecState(self.encoder.init_state(batch), self.decoder.init_state(batch))

  def encode_chunk(self, x, enc_state):
    """`[B, T]` (T a multiple of samples_per_frame) -> (codes `[B, T/spf, Q]`, state)."""
    z, enc_state = self.encoder(x[..., None], enc_state)
    _, codes = self.quantizer(z)
    return codes, enc_state

  def decode_chunk(self, codes, dec_state):
    """codes `[B, F, Q]` -> (`[B, F * spf]` float32, state)."""
    y, dec_state, _ = self.decoder(self.quantizer.decode(codes), dec_state)
    return y[..., 0], dec_state

  def postprocess(self, y):
    return jnp.clip(y, -1.0, 1.0)

  def __call__(self, x, with_entropy: bool = False):
    """Training forward (offline, straight-through): `[B, T]` -> dict(recon `[B, T]`, codes, latent,
    code_entropy `[Q]` (the batch's soft code entropy per stage over its speech frames, 40 ms RMS >
    SPEECH_RMS, in [0, 1]; None unless `with_entropy`), log_f0 `[B, T / strides[0]]` (the harmonic
    head's F0 per hop, natural log of Hz; None without one))."""
    z, _ = self.encoder(x[..., None], self.encoder.init_state(x.shape[0]))
    speech = None
    if with_entropy:
      frames = x[:, : z.shape[1] * self.cfg.samples_per_frame].reshape(x.shape[0], z.shape[1], -1)
      speech = jnp.sqrt(jnp.mean(frames * frames, axis=-1)) > SPEECH_RMS
    zq, codes, entropy = self.quantizer.quantize(z, with_entropy, entropy_mask=speech)
    y, _, log_f0 = self.decoder(zq, self.decoder.init_state(x.shape[0]))
    return {"recon": y[..., 0], "codes": codes, "latent": z, "code_entropy": entropy, "log_f0": log_f0}

  # --- validation -------------------------------------------------------------
  def check_input(self, x, *, unit: bool, concrete_checks: bool = True, sample_rate: int | None = None):
    cfg = self.cfg
    what = "AudioCodec.encode_step" if unit else "AudioCodec.encode"
    if sample_rate is not None and sample_rate != cfg.sample_rate:
      raise ValueError(f"{what}: expected sample_rate={cfg.sample_rate} Hz, received {sample_rate} Hz "
                       "(resample first)")
    check_dtype(x, jnp.float32, what)
    if x.ndim != 2:
      raise ValueError(f"{what}: expected audio of shape [batch, samples], received shape {tuple(x.shape)}")
    n = x.shape[1]
    if unit and n != cfg.samples_per_unit:
      raise ValueError(f"{what}: expected one 160 ms unit = {cfg.samples_per_unit} samples at "
                       f"{cfg.sample_rate} Hz, received {n} samples")
    if not unit and (n == 0 or n % cfg.samples_per_frame):
      raise ValueError(f"{what}: expected a positive multiple of samples_per_frame={cfg.samples_per_frame} "
                       f"(40 ms at {cfg.sample_rate} Hz), received {n} samples")
    if concrete_checks:
      check_finite(x, what)

  def check_codes(self, codes, *, unit: bool, concrete_checks: bool = True):
    cfg = self.cfg
    what = "AudioCodec.decode_step" if unit else "AudioCodec.decode"
    desc = f"[batch, {'4' if unit else 'frames'}, Q={cfg.num_quantizers}]"
    check_int_codes(codes, desc, 3, cfg.vocab_size, what, concrete_checks)
    if codes.shape[2] != cfg.num_quantizers or (unit and codes.shape[1] != cfg.frames_per_unit):
      raise ValueError(f"{what}: expected codes of shape {desc}, received shape {tuple(codes.shape)}")
