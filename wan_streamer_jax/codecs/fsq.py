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


def fsq_quantize(z: jax.Array, levels: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """`z [..., D]` float -> (values `[..., D]` in [-1, 1] with straight-through grads, codes `[...]` int32)."""
  if z.shape[-1] != len(levels):
    raise ValueError(f"fsq_quantize: expected {len(levels)} latent channels, got {z.shape[-1]}")
  half_l, offset, shift, half_width, basis = _consts(tuple(levels))
  bounded = jnp.tanh(z + shift) * half_l - offset
  rounded = jnp.round(bounded)
  q = bounded + jax.lax.stop_gradient(rounded - bounded)
  digits = (jax.lax.stop_gradient(rounded) + half_width).astype(jnp.int32)
  codes = jnp.sum(digits * basis, axis=-1)
  return q / half_width, codes


def fsq_codes_to_values(codes: jax.Array, levels: tuple[int, ...]) -> jax.Array:
  """codes `[...]` int -> values `[..., D]` in [-1, 1] (inverse of `fsq_quantize`'s codes)."""
  _, _, _, half_width, basis = _consts(tuple(levels))
  lv = jnp.asarray(levels, jnp.int32)
  digits = (codes[..., None] // basis) % lv
  return (digits.astype(jnp.float32) - half_width) / half_width


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
    z = z * jax.lax.rsqrt(jnp.mean(z * z, axis=-1, keepdims=True) + 1e-6) * self.gain[...]
    residual = z
    out = jnp.zeros_like(z)
    codes = []
    for i in range(self.num_quantizers):
      values, c = fsq_quantize(residual @ self.w_in[i] + self.b_in[i], self.levels)
      q = values @ self.w_out[i] + self.b_out[i]
      out = out + q
      residual = residual - jax.lax.stop_gradient(q)
      codes.append(c)
    return out, jnp.stack(codes, axis=-1)

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes `[..., Q]` int -> latent `[..., latent_dim]`; invalid ids contribute zero."""
    out = 0.0
    for i in range(self.num_quantizers):
      c = codes[..., i]
      q = fsq_codes_to_values(c, self.levels) @ self.w_out[i] + self.b_out[i]
      out = out + jnp.where(valid_code_mask(c, self.levels)[..., None], q, 0.0)
    return out
