"""Per-stream sampling of the model's next unit: greedy, temperature, top-k (Moshi's defaults).

Every stream of the pool draws from its own key (`StreamingState.rng`, split
once per unit), so a stream's samples depend on its seed and its own history
only, never on its slot or on the other streams of the pool.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from wan_streamer_jax import schedule


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How the model's out tokens are drawn from its logits (static: part of the compiled step).

  Attributes:
    temperature: audio and video codes; 0 = greedy (argmax).
    top_k: audio and video: keep the k most likely codes (0 = all).
    text_temperature: text bytes; 0 = greedy.
    text_top_k: text: keep the k most likely tokens (0 = all).
  """

  temperature: float = 0.8
  top_k: int = 250
  text_temperature: float = 0.7
  text_top_k: int = 25

  def __post_init__(self):
    for name in ("temperature", "text_temperature"):
      val = getattr(self, name)
      if not isinstance(val, (int, float)) or val < 0:
        raise ValueError(f"SamplingConfig.{name}: expected a float >= 0 (0 = greedy), got {val!r}")
    for name in ("top_k", "text_top_k"):
      val = getattr(self, name)
      if not isinstance(val, int) or val < 0:
        raise ValueError(f"SamplingConfig.{name}: expected an int >= 0 (0 = no top-k), got {val!r}")

  def for_kind(self, kind: str) -> tuple[float, int]:
    return (self.text_temperature, self.text_top_k) if kind == "text" else (self.temperature, self.top_k)


def sample(logits, keys, temperature: float, top_k: int):
  """Draws one token per slot.

  Args:
    logits: float32 `[streams, slots, vocab]` (padded entries already masked).
    keys: uint32 `[streams, 2]` one PRNG key per stream.
    temperature: 0 -> argmax.
    top_k: 0 -> no truncation.
  Returns:
    int32 `[streams, slots]`.
  """
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  x = logits.astype(jnp.float32) / temperature
  if top_k and top_k < x.shape[-1]:
    x = jnp.where(x >= kth_largest(x, top_k), x, -jnp.inf)
  noise = jax.vmap(lambda k: jax.random.gumbel(k, x.shape[1:], jnp.float32))(keys)
  return jnp.argmax(x + noise, axis=-1).astype(jnp.int32)


def kth_largest(x, k: int, iters: int = 40):
  """`[..., V]` -> `[..., 1]` the k-th largest value (ties at the boundary are all kept).

  Bisection on the value (count of entries >= t), not a sort: `lax.top_k` is sort-based
  on CPU and cost ~5 ms per step of the tiny engine (measured), this a few compares.
  Masked entries (`<= -1e8`, the padded vocabulary) are ignored for the lower bound.
  """
  valid = x > -1e8
  lo = jnp.min(jnp.where(valid, x, jnp.inf), axis=-1, keepdims=True)  # count(x >= lo) = #valid
  hi = jnp.max(x, axis=-1, keepdims=True)

  def halve(_, bounds):  # invariant: count(x >= lo) >= k (or every valid entry), count(x > hi) < k
    lo, hi = bounds
    mid = lo + (hi - lo) / 2
    ok = jnp.sum(x >= mid, axis=-1, keepdims=True) >= k
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  return lax.fori_loop(0, iters, halve, (lo, hi))[0]


def split_keys(keys, num: int):
  """uint32 `[streams, 2]` -> (next keys `[streams, 2]`, `num` sample keys each `[streams, 2]`)."""
  parts = jax.vmap(lambda k: jax.random.split(k, num + 1))(keys)  # [streams, num + 1, 2]
  return parts[:, 0], [parts[:, i + 1] for i in range(num)]


def seed_keys(seeds):
  """int32 `[streams]` seeds -> uint32 `[streams, 2]` keys (threefry raw key data)."""
  return jax.vmap(jax.random.PRNGKey)(seeds)


def draw_out_groups(model, layout, logits: dict, hidden, keys: dict, sampling: SamplingConfig, forced=None,
                    groups=None):
  """Draws the model's next unit: every out group's tokens from one decode step's outputs.

  Text and audio go slot by slot through the depth head when the model has one (`forced` tokens,
  group -> int32 `[n, n_group]`, are fed back instead of the draws), the other groups in parallel.
  Args: `logits` kind -> float32 `[n, n_kind, V_pad]` and `hidden` `[n, L, d]` of `model(..., cache=...,
  return_hidden=True, groups=groups)` (`groups`, None: every group, else the groups whose logits the model
  computed, every out group among them); `keys` out group -> uint32 `[n, 2]`.
  Returns (out group -> int32 `[n, n_group]` the draws, the logits with the depth head's merged in).
  """
  sampled = {}
  if model.depth is not None:
    draw = lambda lg, key, kind: sample(lg, key, *sampling.for_kind(kind))  # noqa: E731
    sampled, depth_logits = model.depth_decode(hidden, keys, draw, forced)
    logits = model.merge_depth_logits(logits, depth_logits)
  for g in schedule.OUT_GROUPS:
    if g not in sampled:
      kind = g.split("_")[0]
      sampled[g] = sample(logits[kind][:, layout.slice_in_kind(g, groups)], keys[g], *sampling.for_kind(kind))
  return sampled, logits
