"""Causal video codec: frames `[batch, frames, H, W, 3]` uint8 (25 fps) <-> codes `[batch, units, H/s, W/s]` int32.

One unit = 4 frames (160 ms) -> one latent frame of `(H/s, W/s)` FSQ codes
(`levels`, one code per latent position). Temporal compression is a causal
strided conv (kernel 4, stride 4, aligned to units), so a unit's latent sees
only that unit's frames and earlier ones (through the causal temporal kernels
of the residual blocks, `kernel_t` latent frames). The decoder gives 4 frames
per unit from codes up to that unit. Spatially everything is an ordinary
'SAME' 2-D conv inside a frame.

    encoder: [B,T,H,W,3] -> patchify p (space-to-depth) -> causal conv (t: 4/4, 3x3) -> res blocks
             -> per further stage: space-to-depth 2 + 3x3 conv -> res blocks
             -> FSQ (RMS norm, projection to D = len(levels), one code per latent position)
    decoder: FSQ values projected back -> causal conv (t: kernel_t, 3x3) -> res blocks
             -> per stage: 3x3 conv to 4C + depth-to-space 2 -> res blocks
             -> causal time upsample x4 (subpixel) -> 3x3 conv to 3*p*p -> depth-to-space p
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from wan_streamer_jax.codecs.base import (CodecState, StreamingCodec, check_dtype, check_int_codes)
from wan_streamer_jax.codecs.causal_conv import (CausalConv, CausalUpsample, ResBlock, depth_to_space,
                                                 space_to_depth)
from wan_streamer_jax.codecs.fsq import ResidualFSQ
from wan_streamer_jax.config import FRAMES_PER_UNIT, VideoCodecConfig

F = FRAMES_PER_UNIT


def _run_blocks(blocks, x, states):
  new = []
  for blk, s in zip(blocks, states):
    x, s = blk(x, s)
    new.append(s)
  return x, new


class VideoEncoder(nnx.Module):
  """`[B, T, H, W, 3]` float in [-1, 1] -> latent features `[B, T/4, h, w, channels[-1]]`."""

  def __init__(self, cfg: VideoCodecConfig, *, rngs: nnx.Rngs):
    p, ch = cfg.patch_size, cfg.channels
    self.p = p
    sizes = [(cfg.height // (p << i), cfg.width // (p << i)) for i in range(len(ch))]
    self.stems = nnx.List()
    self.blocks = nnx.List()
    for i, c in enumerate(ch):
      if i == 0:
        stem = CausalConv(3 * p * p, c, F, stride=F, kernel_s=3, spatial=sizes[0], rngs=rngs)
      else:
        stem = CausalConv(4 * ch[i - 1], c, 1, kernel_s=3, spatial=sizes[i], rngs=rngs)
      self.stems.append(stem)
      self.blocks.append(nnx.List([ResBlock(c, cfg.kernel_t, kernel_s=3, spatial=sizes[i], norm=cfg.res_norm, rngs=rngs)
                                   for _ in range(cfg.num_res_blocks)]))

  def init_state(self, batch: int):
    return {"stems": [s.init_state(batch) for s in self.stems],
            "blocks": [[b.init_state(batch) for b in st] for st in self.blocks]}

  def __call__(self, x, state):
    new = {"stems": [], "blocks": []}
    x = space_to_depth(x, self.p)
    for i, (stem, stage) in enumerate(zip(self.stems, self.blocks)):
      if i > 0:
        x = space_to_depth(jax.nn.silu(x), 2)
      x, s = stem(x, state["stems"][i])
      new["stems"].append(s)
      x, s = _run_blocks(stage, x, state["blocks"][i])
      new["blocks"].append(s)
    return x, new


class VideoDecoder(nnx.Module):
  """quantised latent `[B, U, h, w, channels[-1]]` -> `[B, 4U, H, W, 3]` float (about [-1, 1])."""

  def __init__(self, cfg: VideoCodecConfig, *, rngs: nnx.Rngs):
    p, ch = cfg.patch_size, cfg.channels
    self.p = p
    n = len(ch)
    sizes = [(cfg.height // (p << i), cfg.width // (p << i)) for i in range(n)]
    self.inp = CausalConv(ch[-1], ch[-1], cfg.kernel_t, kernel_s=3, spatial=sizes[-1], rngs=rngs)
    self.blocks = nnx.List()
    self.ups = nnx.List()
    for i in reversed(range(n)):
      self.blocks.append(nnx.List([ResBlock(ch[i], cfg.kernel_t, kernel_s=3, spatial=sizes[i], norm=cfg.res_norm, rngs=rngs)
                                   for _ in range(cfg.num_res_blocks)]))
      if i > 0:
        self.ups.append(CausalConv(ch[i], 4 * ch[i - 1], 1, kernel_s=3, spatial=sizes[i], rngs=rngs))
    self.time_up = CausalUpsample(ch[0], ch[0], F, cfg.kernel_t, mode=cfg.upsample, kernel_s=3,
                                  spatial=sizes[0], rngs=rngs)
    self.out = CausalConv(ch[0], 3 * p * p, 1, kernel_s=3, spatial=sizes[0], rngs=rngs)

  def init_state(self, batch: int):
    return {"inp": self.inp.init_state(batch),
            "blocks": [[b.init_state(batch) for b in st] for st in self.blocks],
            "time_up": self.time_up.init_state(batch)}

  def __call__(self, z, state):
    new = {"blocks": []}
    x, new["inp"] = self.inp(z, state["inp"])
    for i, stage in enumerate(self.blocks):
      x, s = _run_blocks(stage, x, state["blocks"][i])
      new["blocks"].append(s)
      if i < len(self.ups):
        x, _ = self.ups[i](jax.nn.silu(x))
        x = depth_to_space(x, 2)
    x, new["time_up"] = self.time_up(jax.nn.silu(x), state["time_up"])
    y, _ = self.out(jax.nn.silu(x))
    return depth_to_space(y, self.p), new


def frames_to_float(x):
  """uint8 `[0, 255]` -> float32 `[-1, 1]`."""
  return x.astype(jnp.float32) / 127.5 - 1.0


def float_to_frames(y):
  """float `[-1, 1]` -> uint8 (rounded, clipped)."""
  return jnp.clip(jnp.round((y + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


class VideoCodec(StreamingCodec):
  """Streaming video codec (Flax NNX). See the module docstring and `base.py` for the API."""

  def __init__(self, cfg: VideoCodecConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = VideoEncoder(cfg, rngs=rngs)
    # One FSQ stage: RMS-normalised features -> D = len(levels) -> code, and back (fsq.py).
    self.quantizer = ResidualFSQ(cfg.channels[-1], cfg.levels, 1, rngs=rngs)
    self.decoder = VideoDecoder(cfg, rngs=rngs)

  # --- core (traceable) -----------------------------------------------------
  def init_state(self, batch: int) -> CodecState:
    return CodecState(self.encoder.init_state(batch), self.decoder.init_state(batch))

  def encode_chunk(self, x, enc_state):
    """uint8 `[B, 4U, H, W, 3]` -> (codes `[B, U, h, w]`, state)."""
    z, enc_state = self.encoder(frames_to_float(x), enc_state)
    _, codes = self.quantizer(z)
    return codes[..., 0], enc_state

  def decode_chunk(self, codes, dec_state):
    """codes `[B, U, h, w]` -> (float32 `[B, 4U, H, W, 3]` in about [-1, 1], state)."""
    return self.decoder(self.quantizer.decode(codes[..., None]), dec_state)

  def postprocess(self, y):
    return float_to_frames(y)

  def __call__(self, x, with_entropy: bool = False):
    """Training forward (offline, straight-through): float `[B, T, H, W, 3]` in [-1, 1] -> dict(recon,
    codes, latent, code_entropy `[1]` (soft code entropy in [0, 1]; None unless `with_entropy`))."""
    z, _ = self.encoder(x, self.encoder.init_state(x.shape[0]))
    zq, codes, entropy = self.quantizer.quantize(z, with_entropy)
    y, _ = self.decoder(zq, self.decoder.init_state(x.shape[0]))
    return {"recon": y, "codes": codes[..., 0], "latent": z, "code_entropy": entropy}

  # --- validation -------------------------------------------------------------
  def check_input(self, x, *, unit: bool, concrete_checks: bool = True, fps: float | None = None):
    cfg = self.cfg
    what = "VideoCodec.encode_step" if unit else "VideoCodec.encode"
    if fps is not None and fps != 25:
      raise ValueError(f"{what}: expected fps=25, received fps={fps} (resample the frame rate first)")
    check_dtype(x, jnp.uint8, what)
    if x.ndim != 5 or tuple(x.shape[2:]) != (cfg.height, cfg.width, 3):
      raise ValueError(f"{what}: expected frames of shape [batch, frames, {cfg.height}, {cfg.width}, 3], "
                       f"received shape {tuple(x.shape)}")
    n = x.shape[1]
    if unit and n != F:
      raise ValueError(f"{what}: expected one 160 ms unit = {F} frames at 25 fps, received {n} frames")
    if not unit and (n == 0 or n % F):
      raise ValueError(f"{what}: expected a positive multiple of {F} frames (whole 160 ms units), "
                       f"received {n} frames")

  def check_codes(self, codes, *, unit: bool, concrete_checks: bool = True):
    cfg = self.cfg
    what = "VideoCodec.decode_step" if unit else "VideoCodec.decode"
    desc = f"[batch, {'1' if unit else 'units'}, {cfg.latent_h}, {cfg.latent_w}]"
    check_int_codes(codes, desc, 4, cfg.vocab_size, what, concrete_checks)
    if tuple(codes.shape[2:]) != (cfg.latent_h, cfg.latent_w) or (unit and codes.shape[1] != 1):
      raise ValueError(f"{what}: expected codes of shape {desc}, received shape {tuple(codes.shape)}")
