"""Finite scalar quantisation (FSQ, Mentzer et al. 2023) and residual FSQ.

FSQ bounds each of `D = len(levels)` latent channels with a shifted tanh to
`levels[i]` values, rounds, and rescales to [-1, 1]. Rounding uses a
straight-through estimator (identity gradient); there is no codebook and no
commitment loss. A code is the mixed-radix index of the D digits:
`code = sum_i digit_i * prod(levels[:i])`, in `[0, prod(levels))`.

`ResidualFSQ` quantises a `latent_dim` latent with `Q` stages: the latent is
first RMS-normalised per position (learned gain), then stage `i` projects the
current residual to D channels, quantises it, projects back and subtracts it
(coarse to fine). The decoded latent is the sum of the stages. The norm keeps
the encoder from inflating its latent until every tanh bound saturates (which
collapsed the codebooks to a few corner codes in early runs).

`ResidualFSQ.quantize` also returns each stage's code entropy: the entropy of
the batch's *soft* code histogram (every position's bounded digits assigned to
the levels by a Gaussian kernel, the per-digit assignments multiplied into a
joint over all `prod(levels)` codes), divided by `log(prod(levels))` -- 1.0 when
the batch uses every code equally. Its gradient spreads the bounded values
over the levels; training can maximise it (`codec_train.entropy_weight`): a
1 kbps audio codec used ~7 of its 10 bits per stage without it.

Ids outside `[0, codebook_size)` (e.g. a stream's MISSING id) decode to a zero
contribution, so a missing frame is a neutral latent, not an arbitrary code.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wan_streamer_jax.codecs.causal_conv import normal_init

_EPS = 1e-3


def _consts(levels: tuple[int, ...]):
  lv = np.asarray(levels, np.float64)
  half_l = (lv - 1) * (1 + _EPS) / 2
  offset = np.where(lv % 2 == 0, 0.5, 0.0)
  shift = np.arctanh(offset / half_l)
  half_width = np.floor(lv / 2)
  basis = np.cumprod([1] + list(levels[:-1])).astype(np.int64)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return f32(half_l), f32(offset), f32(shift), f32(half_width), jnp.asarray(basis, jnp.int32)


def fsq_bound(z: jax.Array, levels: tuple[int, ...]) -> jax.Array:
  """`z [..., D]` -> bounded digits `[..., D]`: digit i in about [-(L_i - 1)/2 - offset, (L_i - 1)/2 - offset]."""
  if z.shape[-1] != len(levels):
    raise ValueError(f"fsq_quantize: expected {len(levels)} latent channels, got {z.shape[-1]}")
  half_l, offset, shift, _, _ = _consts(tuple(levels))
  return jnp.tanh(z + shift) * half_l - offset


def soft_code_entropy(bounded: jax.Array, levels: tuple[int, ...], temperature: float = 0.5,
                      mask: jax.Array | None = None) -> jax.Array:
  """Bounded digits `[..., D]` -> scalar in [0, 1]: entropy of the batch's soft joint code histogram / log(codes).

  Digit i's soft assignment to its levels is softmax(-(digit - level)^2 / temperature); the
  per-digit assignments multiply into a joint over all codes (mixed radix, as the code ids).
  `mask` (bool `[...]`, the positions' shape) restricts the histogram to some positions (e.g.
  speech frames: silence may keep one code); with none set, every position counts.
  """
  _, _, _, half_width, _ = _consts(tuple(levels))
  flat = bounded.reshape(-1, len(levels))
  joint = jnp.ones((flat.shape[0], 1), jnp.float32)
  for i in reversed(range(len(levels))):  # digit 0 is the fastest-varying, as in the code ids
    centres = jnp.arange(levels[i], dtype=jnp.float32) - half_width[i]
    p = jax.nn.softmax(-(flat[:, i:i + 1] - centres) ** 2 / temperature, axis=-1)
    joint = (joint[:, :, None] * p[:, None, :]).reshape(flat.shape[0], -1)
  if mask is None:
    hist = jnp.mean(joint, axis=0)
  else:
    w = mask.reshape(-1).astype(jnp.float32)
    w = jnp.where(jnp.sum(w) > 0, w, 1.0)
    hist = jnp.sum(joint * w[:, None], axis=0) / jnp.sum(w)
  return -jnp.sum(hist * jnp.log(hist + 1e-12)) / math.log(math.prod(levels))


def fsq_quantize(z: jax.Array, levels: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """`z [..., D]` float -> (values `[..., D]` in [-1, 1] with straight-through grads, codes `[...]` int32)."""
  return fsq_round(fsq_bound(z, levels), levels)


def fsq_round(bounded: jax.Array, levels: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Bounded digits (`fsq_bound`) -> `fsq_quantize`'s (values, codes)."""
  _, _, _, half_width, basis = _consts(tuple(levels))
  rounded = jnp.round(bounded)
  q = bounded + jax.lax.stop_gradient(rounded - bounded)
  digits = (jax.lax.stop_gradient(rounded) + half_width).astype(jnp.int32)
  codes = jnp.sum(digits * basis, axis=-1)
  return q / half_width, codes


def fsq_digits(codes: jax.Array, levels: tuple[int, ...]) -> jax.Array:
  """codes `[...]` int -> digits `[..., D]` int32, digit i in `[0, levels[i])` (digit 0 varies fastest)."""
  basis = _consts(tuple(levels))[4]
  return (codes[..., None] // basis) % jnp.asarray(levels, jnp.int32)


def fsq_codes_to_values(codes: jax.Array, levels: tuple[int, ...]) -> jax.Array:
  """codes `[...]` int -> values `[..., D]` in [-1, 1] (inverse of `fsq_quantize`'s codes)."""
  half_width = _consts(tuple(levels))[3]
  return (fsq_digits(codes, levels).astype(jnp.float32) - half_width) / half_width


def valid_code_mask(codes: jax.Array, levels: tuple[int, ...]) -> jax.Array:
  return (codes >= 0) & (codes < math.prod(levels))


class ResidualFSQ(nnx.Module):
  """`[..., latent_dim]` -> (quantised `[..., latent_dim]`, codes `[..., Q]` int32)."""

  def __init__(self, latent_dim: int, levels: tuple[int, ...], num_quantizers: int, *, rngs: nnx.Rngs):
    self.levels = tuple(levels)
    self.num_quantizers = num_quantizers
    d = len(levels)
    k1, k2 = rngs.params(), rngs.params()
    self.w_in = nnx.Param(normal_init(k1, (num_quantizers, latent_dim, d), 1 / math.sqrt(latent_dim)))
    self.b_in = nnx.Param(jnp.zeros((num_quantizers, d)))
    self.w_out = nnx.Param(normal_init(k2, (num_quantizers, d, latent_dim), 1 / math.sqrt(d)))
    self.b_out = nnx.Param(jnp.zeros((num_quantizers, latent_dim)))
    self.gain = nnx.Param(jnp.ones((latent_dim,)))

  def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    out, codes, _ = self.quantize(z)
    return out, codes

  def quantize(self, z: jax.Array, with_entropy: bool = False,
               entropy_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """-> (quantised latent, codes `[..., Q]`, per-stage soft code entropy `[Q]` in [0, 1] or None).

    `entropy_mask` (bool, z's shape without its last axis): the positions the entropy counts."""
    z = z * jax.lax.rsqrt(jnp.mean(z * z, axis=-1, keepdims=True) + 1e-6) * self.gain[...]
    residual = z
    out = jnp.zeros_like(z)
    codes, entropy = [], []
    for i in range(self.num_quantizers):
      bounded = fsq_bound(residual @ self.w_in[i] + self.b_in[i], self.levels)
      values, c = fsq_round(bounded, self.levels)
      if with_entropy:
        entropy.append(soft_code_entropy(bounded, self.levels, mask=entropy_mask))
      q = values @ self.w_out[i] + self.b_out[i]
      out = out + q
      residual = residual - jax.lax.stop_gradient(q)
      codes.append(c)
    return out, jnp.stack(codes, axis=-1), (jnp.stack(entropy) if with_entropy else None)

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes `[..., Q]` int -> latent `[..., latent_dim]`; invalid ids contribute zero."""
    out = 0.0
    for i in range(self.num_quantizers):
      c = codes[..., i]
      q = fsq_codes_to_values(c, self.levels) @ self.w_out[i] + self.b_out[i]
      out = out + jnp.where(valid_code_mask(c, self.levels)[..., None], q, 0.0)
    return out
