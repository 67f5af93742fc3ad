"""Time-aligned multimodal RoPE: the head dimension split into `(t, h, w)` sections.

`t` counts 40 ms ticks (unit * 4 + tick inside the unit), so audio frame `i`
and video frame `i` of a unit share a time position; `h, w` are latent grid
coordinates for video and 0 for audio and text.
"""

from __future__ import annotations

import jax.numpy as jnp


def rope_angles(positions, sections: tuple[int, int, int], theta: float):
  """Rotation angles.

  Args:
    positions: int32 `[batch, seq, 3]` `(t, h, w)`.
    sections: head-dim sizes of the t, h, w sections (even, sum = head_dim).
  Returns:
    float32 `[batch, seq, head_dim // 2]`.
  """
  parts = []
  for i, size in enumerate(sections):
    inv_freq = theta ** (-jnp.arange(0, size, 2, dtype=jnp.float32) / size)
    parts.append(positions[..., i:i + 1].astype(jnp.float32) * inv_freq)
  return jnp.concatenate(parts, axis=-1)


def rope_tables(angles):
  """`(cos, sin)`, each float32 `[batch, seq, 1, head_dim // 2]`: computed once, shared by all layers."""
  return jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]


def apply_rope(x, tables):
  """Rotates `x` `[batch, seq, heads, head_dim]` by `rope_tables(angles)`."""
  half = x.shape[-1] // 2
  cos, sin = tables
  x1 = x[..., :half].astype(jnp.float32)
  x2 = x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)
