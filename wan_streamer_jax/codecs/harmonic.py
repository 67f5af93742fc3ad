"""Causal harmonic oscillator bank: the audio decoder's explicit excitation (DDSP-style harmonic part).

Why: at ~1 kbps an iSTFT head with 20 ms frames (50 Hz bins) cannot draw the harmonics of a voice
it has not learnt; it smears them into noise (Codec2 keeps them: it codes the pitch). This head
codes the pitch explicitly: per 10 ms hop it predicts an F0 and a log-amplitude spectral envelope,
and sums `harmonics` sinusoids at k * F0 whose amplitudes are the envelope read at k * F0.
Formants (the envelope) and pitch are separate, so a new voice is a new F0 on known envelopes.

    head = HarmonicHead(ch, hop=160, sample_rate=16000, harmonics=64, env_bins=161, rngs=...)
    y, log_f0, state = head(features, state)   # features [B, T, ch] at hop rate
    # y [B, T * hop, 1] float32, log_f0 [B, T] (natural log of Hz; what the F0 loss reads)

Synthesis of hop `t` (samples n = 1..hop): F0 and the harmonic amplitudes go linearly from hop
`t - 1`'s values to hop `t`'s (so hop `t`'s values hold at its last sample; nothing looks ahead),
the phase (in cycles) advances by the integral of that F0 ramp, and harmonic k adds
`a_k(n) sin(2 pi frac(k phase(n)))`; harmonics at or above Nyquist are silent. State (carried, so
streaming one unit at a time equals the offline call): the phase at the end of the last hop in
[0, 1), the last hop's F0 and harmonic amplitudes. The phase advances hop by hop in a `lax.scan`
with a wrap to [0, 1) after each hop: the same arithmetic offline and streaming, and float32
precision never degrades over a long stream.

The oscillators read F0 through `stop_gradient`: F0 is learnt from the supervised F0 loss
(`codecs/pitch.py` targets), since a spectral loss's gradient with respect to an oscillator's
frequency is uninformative; the envelope is learnt by the spectral losses.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wan_streamer_jax.codecs.causal_conv import CausalConv
from wan_streamer_jax.codecs.pitch import F0_MAX, F0_MIN

ENV_INIT = -7.0  # initial log amplitude of every harmonic: starts quiet beside the iSTFT head
ENV_MAX = 2.0  # cap of the log amplitude (as the iSTFT head caps its log magnitude)


class HarmonicHead(nnx.Module):
  """Hop-rate features `[B, T, C]` -> (waveform `[B, T * hop, 1]`, log F0 `[B, T]`, state). See module doc."""

  def __init__(self, ch: int, hop: int, sample_rate: int, harmonics: int, env_bins: int, *,
               rngs: nnx.Rngs):
    if harmonics < 1 or env_bins < 2:
      raise ValueError(f"HarmonicHead: expected harmonics >= 1 and env_bins >= 2, got {harmonics}, {env_bins}")
    self.hop, self.sample_rate, self.harmonics, self.env_bins = hop, sample_rate, harmonics, env_bins
    self.proj = CausalConv(ch, 1 + env_bins, 1, init_scale=0.1, rngs=rngs)
    self.proj.bias[...] = jnp.concatenate([jnp.zeros((1,)), jnp.full((env_bins,), ENV_INIT)])

  def init_state(self, batch: int) -> dict:
    """All zeros (every codec state is; `CodecFns.init_state` builds zeros of this template): the first
    hop ramps up from silence."""
    return {"phase": jnp.zeros((batch,), jnp.float32),
            "f0": jnp.zeros((batch,), jnp.float32),
            "amp": jnp.zeros((batch, self.harmonics), jnp.float32)}

  def log_f0(self, h: jax.Array) -> jax.Array:
    lo, hi = math.log(F0_MIN), math.log(F0_MAX)
    return lo + jax.nn.sigmoid(h) * (hi - lo)

  def amplitudes(self, f0: jax.Array, log_env: jax.Array) -> jax.Array:
    """f0 `[...]` Hz, log envelope `[..., env_bins]` over 0..Nyquist -> harmonic amplitudes `[..., K]`."""
    nyq = self.sample_rate / 2
    freqs = f0[..., None] * jnp.arange(1, self.harmonics + 1, dtype=jnp.float32)  # [..., K]
    pos = jnp.clip(freqs / nyq * (self.env_bins - 1), 0.0, self.env_bins - 1.0)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, self.env_bins - 1)
    w = pos - lo
    take = lambda i: jnp.take_along_axis(log_env, i, axis=-1)
    log_amp = (1.0 - w) * take(lo) + w * take(hi)
    return jnp.where(freqs < nyq, jnp.exp(jnp.minimum(log_amp, ENV_MAX)), 0.0)

  def __call__(self, x: jax.Array, state: dict | None = None) -> tuple[jax.Array, jax.Array, dict]:
    b, t = x.shape[:2]
    if state is None:
      state = self.init_state(b)
    h, _ = self.proj(x)
    log_f0 = self.log_f0(h[..., 0])  # [B, T]
    f0 = jax.lax.stop_gradient(jnp.exp(log_f0))
    amp = self.amplitudes(f0, h[..., 1:])  # [B, T, K]
    f0_prev = jnp.concatenate([state["f0"][:, None], f0[:, :-1]], axis=1)
    amp_prev = jnp.concatenate([state["amp"][:, None], amp[:, :-1]], axis=1)
    hop, sr = self.hop, float(self.sample_rate)
    # phase at the start of each hop: scan of the per-hop increments (cycles), wrapped to [0, 1)
    inc = (hop * f0_prev + (f0 - f0_prev) * (hop + 1) / 2.0) / sr  # [B, T]

    def advance(phase, d):
      nxt = phase + d
      return nxt - jnp.floor(nxt), phase
    end_phase, start = jax.lax.scan(advance, state["phase"], inc.T)
    start = start.T  # [B, T]
    n = jnp.arange(1, hop + 1, dtype=jnp.float32)  # [H]
    ramp = n / hop
    within = (n[None, None] * f0_prev[..., None]
              + (f0 - f0_prev)[..., None] * (n * (n + 1) / (2.0 * hop))[None, None]) / sr  # [B, T, H]
    phase = start[..., None] + within  # cycles, [B, T, H]
    k = jnp.arange(1, self.harmonics + 1, dtype=jnp.float32)
    kp = phase[..., None] * k  # [B, T, H, K]
    s = jnp.sin(2.0 * jnp.pi * (kp - jnp.floor(kp)))
    y = ((1.0 - ramp)[None, None] * jnp.einsum("bthk,btk->bth", s, amp_prev)
         + ramp[None, None] * jnp.einsum("bthk,btk->bth", s, amp))
    new_state = {"phase": end_phase, "f0": f0[:, -1], "amp": amp[:, -1]}
    return y.reshape(b, t * hop, 1), log_f0, new_state


def f0_loss(log_f0: jax.Array, f0_target: jax.Array, voiced: jax.Array) -> jax.Array:
  """Mean |log2 F0 - log2 target| (octaves) over voiced hops (0 when none): `[B, T]` each."""
  err = jnp.abs(log_f0 - jnp.log(jnp.maximum(f0_target, 1.0))) / np.log(2.0)
  v = voiced.astype(jnp.float32)
  return jnp.sum(err * v) / jnp.maximum(jnp.sum(v), 1.0)
