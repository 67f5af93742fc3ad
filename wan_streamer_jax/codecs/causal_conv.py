"""Causal convolution along time with an explicit, fixed-shape streaming state.

Layout: time is axis 1, features last, optional spatial axes between:
audio `[batch, time, channels]`, video `[batch, time, height, width, channels]`.

A `CausalConv` of temporal kernel `k`, dilation `d` and stride `s` keeps the
last `P = (k - 1) * d + 1 - s` inputs along time as its state (for `s = 1`
that is `(k - 1) * d`), zero-initialised:

    y, new_state = conv(x, state)     # x: [B, T, *S, Cin], T % s == 0
                                      # y: [B, T // s, *S, Cout]
                                      # state, new_state: [B, P, *S, Cin]

Output `n` reads inputs up to index `n * s + s - 1` (the end of its own stride
block) and nothing later. The offline call is the streaming call with a zero
state over the whole clip (`state=None`), so running a clip chunk by chunk
(each chunk a multiple of `s`) with the carried state is the same computation.

The taps are gathered (im2col along time) and contracted in one matmul (or one
2-D spatial conv for video), which is fast on CPU for the narrow layers here.

Upsampling (`CausalUpsample`) never looks ahead either:
- `subpixel`: a causal conv at the low rate producing `s * Cout` channels,
  then depth-to-time (the phases of one low-rate step become `s` outputs) —
  a transposed conv with an overlap state, as in Mimi / the Wan VAE's time
  upsampler;
- `repeat`: repeat each step `s` times, then a causal conv at the high rate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def normal_init(key: jax.Array, shape: tuple[int, ...], std: float) -> jax.Array:
  """`std * N(0, 1)` of `shape`, float32. Eagerly it draws with numpy from the key's bits (no XLA
  compile per parameter shape, which made building a codec take seconds); traced (eval_shape,
  jit) it uses `jax.random.normal`."""
  if isinstance(key, jax.core.Tracer):
    return std * jax.random.normal(key, shape, jnp.float32)
  bits = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  rng = np.random.default_rng(np.asarray(bits).astype(np.uint64).ravel().tolist())
  return jnp.asarray(std * rng.standard_normal(shape, dtype=np.float32))


def _time_taps(xp: jax.Array, kernel_t: int, dilation: int, stride: int, t_out: int) -> jax.Array:
  """[B, P+T, *S, C] -> [B, t_out, *S, k*C]: tap j of output n is xp[n*s + j*d] (tap-major, C-minor)."""
  if stride > 1 and dilation == 1 and kernel_t % stride == 0 and xp.shape[1] % stride == 0:
    # Large strided kernels (e.g. 320 taps at stride 160): gather whole stride blocks, not taps.
    b, n = xp.shape[:2]
    rest = xp.shape[2:]
    blocks = xp.reshape(b, n // stride, stride, *rest)  # [B, N, s, *S, C]
    cols = jnp.concatenate([blocks[:, j:j + t_out] for j in range(kernel_t // stride)], axis=2)
    cols = jnp.moveaxis(cols, 2, -2)  # [B, t_out, *S, k, C]
    return cols.reshape(b, t_out, *rest[:-1], kernel_t * rest[-1])
  taps = [jax.lax.slice_in_dim(xp, j * dilation, j * dilation + (t_out - 1) * stride + 1,
                               stride=stride, axis=1) for j in range(kernel_t)]
  return taps[0] if kernel_t == 1 else jnp.concatenate(taps, axis=-1)


class CausalConv(nnx.Module):
  """Causal conv over time (+ optional 'SAME' 2-D spatial kernel). Shapes in the module doc."""

  def __init__(self, in_ch: int, out_ch: int, kernel_t: int, *, stride: int = 1, dilation: int = 1,
               kernel_s: int = 0, spatial: tuple[int, ...] = (), init_scale: float = 1.4,
               rngs: nnx.Rngs):
    if kernel_t < 1 or stride < 1 or dilation < 1:
      raise ValueError(f"CausalConv: expected kernel_t, stride, dilation >= 1, got {kernel_t}, {stride}, {dilation}")
    if (kernel_t - 1) * dilation + 1 < stride:
      raise ValueError(f"CausalConv: expected an effective kernel >= stride={stride}, "
                       f"got kernel_t={kernel_t}, dilation={dilation}")
    self.in_ch, self.out_ch = in_ch, out_ch
    self.kernel_t, self.stride, self.dilation, self.kernel_s = kernel_t, stride, dilation, kernel_s
    self.spatial = tuple(spatial)  # input spatial shape, for `init_state`
    ks = (kernel_s, kernel_s) if kernel_s else ()
    fan_in = kernel_t * in_ch * math.prod(ks)
    std = init_scale / math.sqrt(fan_in)
    # kernel layout: spatial..., (tap, Cin) flattened, Cout — matches the im2col order.
    shape = (*ks, kernel_t * in_ch, out_ch)
    self.kernel = nnx.Param(normal_init(rngs.params(), shape, std))
    self.bias = nnx.Param(jnp.zeros((out_ch,), jnp.float32))

  @property
  def state_len(self) -> int:
    return (self.kernel_t - 1) * self.dilation + 1 - self.stride

  def init_state(self, batch: int) -> jax.Array:
    return jnp.zeros((batch, self.state_len, *self.spatial, self.in_ch), jnp.float32)

  def __call__(self, x: jax.Array, state: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    b, t = x.shape[:2]
    if t % self.stride:
      raise ValueError(f"CausalConv: expected a time length that is a multiple of stride={self.stride}, got {t}")
    if state is None:
      state = jnp.zeros((b, self.state_len, *x.shape[2:-1], self.in_ch), x.dtype)
    xp = jnp.concatenate([state.astype(x.dtype), x], axis=1)
    new_state = xp[:, xp.shape[1] - self.state_len:]
    t_out = t // self.stride
    cols = _time_taps(xp, self.kernel_t, self.dilation, self.stride, t_out)
    kernel = self.kernel[...]
    if self.kernel_s:
      flat = cols.reshape(b * t_out, *cols.shape[2:])
      y = jax.lax.conv_general_dilated(flat, kernel, (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = y.reshape(b, t_out, *y.shape[1:])
    else:
      y = cols @ kernel
    return y + self.bias[...], new_state


class CausalUpsample(nnx.Module):
  """Time upsampling by `stride` with no look-ahead: `[B, T, *S, Cin] -> [B, T*s, *S, Cout]`."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, kernel_t: int, *, mode: str = "subpixel",
               kernel_s: int = 0, spatial: tuple[int, ...] = (), init_scale: float = 1.4, rngs: nnx.Rngs):
    if mode not in ("subpixel", "repeat"):
      raise ValueError(f"CausalUpsample: expected mode subpixel|repeat, got {mode!r}")
    self.stride, self.mode, self.out_ch = stride, mode, out_ch
    if mode == "subpixel":
      self.conv = CausalConv(in_ch, out_ch * stride, kernel_t, kernel_s=kernel_s, spatial=spatial,
                             init_scale=init_scale, rngs=rngs)
    else:
      self.conv = CausalConv(in_ch, out_ch, kernel_t * stride, kernel_s=kernel_s, spatial=spatial,
                             init_scale=init_scale, rngs=rngs)

  def init_state(self, batch: int) -> jax.Array:
    return self.conv.init_state(batch)

  def __call__(self, x: jax.Array, state: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    if self.mode == "repeat":
      return self.conv(jnp.repeat(x, self.stride, axis=1), state)
    y, new_state = self.conv(x, state)
    b, t = y.shape[:2]
    y = y.reshape(b, t, *y.shape[2:-1], self.stride, self.out_ch)
    y = jnp.moveaxis(y, -2, 2)  # [B, T, s, *S, C]
    return y.reshape(b, t * self.stride, *y.shape[3:]), new_state


class ResBlock(nnx.Module):
  """`x + W2 silu(CausalConv(silu(norm(x))))`; state = the causal conv's. `[B, T, *S, C]` in and out.

  `norm=True` applies an RMS norm over channels at each position (learned gain): per position, so
  it is causal and streaming-exact.
  """

  def __init__(self, ch: int, kernel_t: int, *, dilation: int = 1, kernel_s: int = 0,
               spatial: tuple[int, ...] = (), norm: bool = False, rngs: nnx.Rngs):
    self.conv1 = CausalConv(ch, ch, kernel_t, dilation=dilation, kernel_s=kernel_s, spatial=spatial, rngs=rngs)
    self.conv2 = CausalConv(ch, ch, 1, init_scale=0.1, rngs=rngs)
    self.scale = nnx.Param(jnp.ones((ch,), jnp.float32)) if norm else None

  def init_state(self, batch: int) -> jax.Array:
    return self.conv1.init_state(batch)

  def __call__(self, x: jax.Array, state: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    h = x
    if self.scale is not None:
      h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + 1e-6) * self.scale[...]
    h, new_state = self.conv1(jax.nn.silu(h), state)
    h, _ = self.conv2(jax.nn.silu(h))
    return x + h, new_state


def space_to_depth(x: jax.Array, p: int) -> jax.Array:
  """`[..., H, W, C] -> [..., H/p, W/p, p*p*C]` (a patchify; spatial only, no time mixing)."""
  if p == 1:
    return x
  *lead, h, w, c = x.shape
  x = x.reshape(*lead, h // p, p, w // p, p, c)
  x = jnp.moveaxis(x, -4, -3)  # [..., H/p, W/p, p, p, C]
  return x.reshape(*lead, h // p, w // p, p * p * c)


def depth_to_space(x: jax.Array, p: int) -> jax.Array:
  """Inverse of `space_to_depth`: `[..., h, w, p*p*C] -> [..., h*p, w*p, C]`."""
  if p == 1:
    return x
  *lead, h, w, c = x.shape
  x = x.reshape(*lead, h, w, p, p, c // (p * p))
  x = jnp.moveaxis(x, -3, -4)  # [..., h, p, w, p, C]
  return x.reshape(*lead, h * p, w * p, c // (p * p))


class CausalSTFTFrontend(nnx.Module):
  """Waveform `[B, T, 1]` -> causal log-magnitude STFT `[B, T / hop, n_fft // 2 + 1]`.

  Frame `t` is the Hann-windowed last `n_fft = overlap * hop` samples ending at hop `t`'s end (a
  fixed strided causal conv; state: the last `n_fft - hop` samples). Features are
  `log(|X| + 1e-3)`. Giving the encoder spectral envelopes directly (instead of learning a
  filterbank from the raw waveform) made the codec learn several times faster on CPU.
  """

  def __init__(self, hop: int, overlap: int = 2):
    self.hop, self.n_fft = hop, hop * overlap
    self.bins = self.n_fft // 2 + 1

  @property
  def state_len(self) -> int:
    return self.n_fft - self.hop

  def init_state(self, batch: int) -> jax.Array:
    return jnp.zeros((batch, self.state_len, 1), jnp.float32)

  def __call__(self, x: jax.Array, state: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    b, t = x.shape[:2]
    if t % self.hop:
      raise ValueError(f"CausalSTFTFrontend: expected a time length that is a multiple of hop={self.hop}, got {t}")
    if state is None:
      state = self.init_state(b)
    xp = jnp.concatenate([state.astype(x.dtype), x], axis=1)
    frames = _time_taps(xp, self.n_fft, 1, self.hop, t // self.hop)  # [B, T/hop, n_fft]
    window = 0.5 - 0.5 * jnp.cos(2 * jnp.pi * jnp.arange(self.n_fft) / self.n_fft)
    spec = jnp.fft.rfft(frames * window, axis=-1)
    mag = jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + 1e-12)
    return jnp.log(mag + 1e-3), xp[:, xp.shape[1] - self.state_len:]


class CausalISTFTHead(nnx.Module):
  """Features at hop rate `[B, T, C]` -> waveform `[B, T * hop, 1]` through a causal inverse STFT.

  Per step a 1x1 projection gives a log-magnitude and a phase for the `n_fft // 2 + 1` bins of a
  frame of `n_fft = overlap * hop` samples; the frame is `irfft`-ed, Hann-windowed and overlap-added
  *forward*: frame `t` covers output hops `t .. t + overlap - 1`, so output hop `t` is final once
  frame `t` exists (no look-ahead). State: the last `overlap - 1` windowed frames, zero-initialised.
  Parametrising magnitudes directly (Vocos-style) makes the spectral losses near-regressions,
  which trained much faster than a learned linear synthesis in our CPU runs.

  `phase="advance"` adds a running phase per bin to the projected one (a phase vocoder's synthesis
  beside the absolute phase): a second 1x1 projection gives each hop's phase advance, whose running
  sum (wrapped to [-pi, pi), `[B, bins]`, carried in the state as `{"frames", "phase"}`) is added to
  the projected phase. Its bias starts at minus the bin centre's own advance `2 pi k / overlap`
  and its weights at zero, so the running phase starts constant and the head starts equal to the
  absolute one; a sinusoid between bin centres can then keep a coherent phase across hops without
  the network counting its periods.
  """

  def __init__(self, ch: int, hop: int, overlap: int = 2, *, phase: str = "absolute", rngs: nnx.Rngs):
    if overlap < 1:
      raise ValueError(f"CausalISTFTHead: expected overlap >= 1, got {overlap}")
    if phase not in ("absolute", "advance"):
      raise ValueError(f"CausalISTFTHead: expected phase absolute | advance, got {phase!r}")
    self.hop, self.overlap, self.n_fft = hop, overlap, hop * overlap
    self.bins = self.n_fft // 2 + 1
    self.proj = CausalConv(ch, 2 * self.bins, 1, init_scale=0.1, rngs=rngs)
    self.proj.bias[...] = jnp.concatenate([jnp.full((self.bins,), -4.0), jnp.zeros((self.bins,))])
    self.advance = CausalConv(ch, self.bins, 1, init_scale=0.0, rngs=rngs) if phase == "advance" else None
    if self.advance is not None:
      self.advance.bias[...] = -self._centre_advance()

  def init_state(self, batch: int):
    frames = jnp.zeros((batch, self.overlap - 1, self.n_fft), jnp.float32)
    if self.advance is not None:
      return {"frames": frames, "phase": jnp.zeros((batch, self.bins), jnp.float32)}
    return frames

  def _centre_advance(self) -> jax.Array:
    """`[bins]`: each bin centre's own phase advance per hop, `2 pi k / overlap` mod 2 pi (exact)."""
    return (2 * jnp.pi / self.overlap) * (jnp.arange(self.bins) % self.overlap).astype(jnp.float32)

  def _running_phase(self, x: jax.Array, start: jax.Array) -> jax.Array:
    """`[B, T, bins]`: the running phase after each hop, from `start` `[B, bins]` (the one before)."""
    d, _ = self.advance(x)
    step = _wrap(d + self._centre_advance())  # exactly 0 at the start: the head starts absolute
    walk = jax.lax.associative_scan(lambda a, b: _wrap(a + b), step, axis=1)
    return _wrap(start[:, None, :] + walk)

  def __call__(self, x: jax.Array, state=None):
    b, t = x.shape[:2]
    if state is None:
      state = self.init_state(b)
    frames_state = state if self.advance is None else state["frames"]
    h, _ = self.proj(x)
    log_mag, phase = jnp.minimum(h[..., :self.bins], 8.0), h[..., self.bins:]
    if self.advance is not None:
      running = self._running_phase(x, state["phase"])
      phase = phase + running
    spec = jnp.exp(log_mag) * jax.lax.complex(jnp.cos(phase), jnp.sin(phase))
    window = 0.5 - 0.5 * jnp.cos(2 * jnp.pi * jnp.arange(self.n_fft) / self.n_fft)  # periodic Hann
    frames = jnp.fft.irfft(spec, n=self.n_fft, axis=-1) * window  # [B, T, n_fft]
    fp = jnp.concatenate([frames_state.astype(frames.dtype), frames], axis=1)  # [B, K-1+T, n_fft]
    k = self.overlap
    y = sum(fp[:, k - 1 - j:k - 1 - j + t, j * self.hop:(j + 1) * self.hop] for j in range(k))
    new_frames = fp[:, fp.shape[1] - (k - 1):]
    if self.advance is not None:
      return y.reshape(b, t * self.hop, 1), {"frames": new_frames, "phase": running[:, -1]}
    return y.reshape(b, t * self.hop, 1), new_frames


def _wrap(phase: jax.Array) -> jax.Array:
  """Radians -> the same angle in [-pi, pi)."""
  return jnp.mod(phase + jnp.pi, 2 * jnp.pi) - jnp.pi
