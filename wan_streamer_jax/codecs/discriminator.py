"""Audio discriminators and GAN losses for the codec's optional adversarial training.

A codec trained on spectral losses alone learns "envelope + noise": at 2-4 kHz it fills a
formant's band with noise of the right level where speech has harmonics and F2/F3 tracks
(the spectral L1 barely charges it; STOI and PESQ do). A discriminator charges exactly
that texture. Two families, the standard pair of HiFi-GAN / EnCodec / DAC, both optional:

    PeriodDiscriminator(p)   waveform `[B, T]` folded to `[B, T/p, p, 1]`, 2-D convs along time
                             (kernel (5, 1), stride 3): periodic structure at period p samples
    STFTDiscriminator(n_fft) compressed complex STFT `[B, frames, bins, 2]` (|X|^0.3 with X's
                             phase), 2-D convs strided along frequency: spectral texture

`Discriminator` holds any number of each; its call returns one `(logits, features)` pair per
sub-discriminator. Losses are least-squares (HiFi-GAN); feature matching is the L1 between
the sub-discriminators' hidden activations on the reference and on the reconstruction,
relative to the reference's mean magnitude per layer (EnCodec), so its scale does not
depend on a layer's width or on training time.

The discriminators only exist at training time: they are not part of the codec's parameters
or checkpoint item `params` (`codecs.train_task` keeps them beside the optimizer state).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from wan_streamer_jax.codecs.losses import magnitude, stft

_SLOPE = 0.1  # leaky ReLU slope (HiFi-GAN)
_COMPRESS = 0.3  # STFT magnitude compression exponent


def _conv_stack(convs, out, h: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
  """Leaky-ReLU convs, then the 1-channel output conv -> (logits without the channel axis, activations)."""
  feats = []
  for conv in convs:
    h = jax.nn.leaky_relu(conv(h), _SLOPE)
    feats.append(h)
  return out(h)[..., 0], feats


class PeriodDiscriminator(nnx.Module):
  """`[B, T]` -> logits `[B, T', p]` and hidden activations; T is zero-padded to a multiple of `period`."""

  def __init__(self, period: int, channels: int, *, rngs: nnx.Rngs):
    self.period = period
    widths = (channels, 2 * channels, 4 * channels, 4 * channels)
    self.convs = nnx.List()
    cin = 1
    for i, c in enumerate(widths):
      stride = (3, 1) if i < 3 else (1, 1)
      self.convs.append(nnx.Conv(cin, c, (5, 1), strides=stride, padding=((2, 2), (0, 0)), rngs=rngs))
      cin = c
    self.out = nnx.Conv(cin, 1, (3, 1), padding=((1, 1), (0, 0)), rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    b, t = x.shape
    pad = (-t) % self.period
    h = jnp.pad(x, ((0, 0), (0, pad))).reshape(b, (t + pad) // self.period, self.period, 1)
    return _conv_stack(self.convs, self.out, h)


class STFTDiscriminator(nnx.Module):
  """`[B, T]` -> logits `[B, frames, bins']` and hidden activations, from one STFT resolution (hop n_fft/4)."""

  def __init__(self, n_fft: int, channels: int, *, rngs: nnx.Rngs):
    self.n_fft = n_fft
    self.convs = nnx.List()
    cin = 2
    for _ in range(3):  # kernel (time 3, freq 9), each halving the frequency axis (a full-resolution
      #                   layer would cost 4x the rest on CPU)
      self.convs.append(nnx.Conv(cin, channels, (3, 9), strides=(1, 2), padding=((1, 1), (4, 4)), rngs=rngs))
      cin = channels
    self.convs.append(nnx.Conv(cin, channels, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs))
    self.out = nnx.Conv(channels, 1, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    spec = stft(x, self.n_fft, self.n_fft // 4)
    scale = magnitude(spec) ** (_COMPRESS - 1.0)  # |X|^0.3 with X's phase: loud and quiet bins on one scale
    h = jnp.stack([jnp.real(spec) * scale, jnp.imag(spec) * scale], axis=-1)
    return _conv_stack(self.convs, self.out, h)


class Discriminator(nnx.Module):
  """Multi-period and multi-resolution STFT sub-discriminators on `[B, T]` float32 waveforms."""

  def __init__(self, periods: tuple[int, ...], ffts: tuple[int, ...], channels: int, *, rngs: nnx.Rngs):
    if not periods and not ffts:
      raise ValueError("Discriminator: expected at least one period or one STFT size, got none")
    self.subs = nnx.List([PeriodDiscriminator(p, channels, rngs=rngs) for p in periods]
                         + [STFTDiscriminator(n, channels, rngs=rngs) for n in ffts])

  def __call__(self, x: jax.Array) -> list[tuple[jax.Array, list[jax.Array]]]:
    return [d(x) for d in self.subs]


def discriminator_loss(real: list, fake: list) -> jax.Array:
  """Least-squares: mean over sub-discriminators of mean (1 - D(real))^2 + mean D(fake)^2."""
  terms = [jnp.mean((1.0 - r) ** 2) + jnp.mean(f ** 2) for (r, _), (f, _) in zip(real, fake)]
  return sum(terms) / len(terms)


def generator_loss(fake: list) -> jax.Array:
  """Least-squares: mean over sub-discriminators of mean (1 - D(fake))^2."""
  return sum(jnp.mean((1.0 - f) ** 2) for f, _ in fake) / len(fake)


def feature_matching_loss(real: list, fake: list) -> jax.Array:
  """Mean over sub-discriminators and layers of mean |F(real) - F(fake)| / mean |F(real)|.

  The reference's activations are constants (no gradient): the term moves the codec only.
  """
  terms = []
  for (_, fr), (_, ff) in zip(real, fake):
    for a, b in zip(fr, ff):
      a = jax.lax.stop_gradient(a)
      terms.append(jnp.mean(jnp.abs(a - b)) / (jnp.mean(jnp.abs(a)) + 1e-5))
  return sum(terms) / len(terms)
