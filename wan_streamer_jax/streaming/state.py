"""`StreamingState`: everything a pool of `S` session slots carries from one 160 ms unit to the next.

A pytree of fixed-shape arrays (so the step can be jitted, donated, scanned and
exported); every leaf has the slot axis first, except the KV cache's k/v, which
have the layer axis first (`[layers, S, ...]`, scanned with the blocks).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wan_streamer_jax.codecs.base import CodecState
from wan_streamer_jax.model.kv_cache import KVCache


class StreamingState(NamedTuple):
  """Per-slot streaming state.

  Attributes:
    cache: the model's ring KV cache (`model/kv_cache.py`), `sink_units + window_units` units per slot.
    audio, video: the codecs' encoder/decoder states (batch = slots).
    unit: int32 `[S]` index of the next unit in the slot's conversation (0 after a reset).
    rng: uint32 `[S, 2]` the slot's PRNG key (advanced once per processed unit).
    prev_out: int32 `[S, n_out]` the model's tokens of the previous unit, out groups in layout
      order (`video_out, audio_out, text_out`): the out slots of the next unit. MISSING at unit 0.
    in_turn: bool `[S]` the model is inside a turn (spoke since its last END_OF_TURN).
  """

  cache: KVCache
  audio: CodecState
  video: CodecState
  unit: jax.Array
  rng: jax.Array
  prev_out: jax.Array
  in_turn: jax.Array


jax.export.register_namedtuple_serialization(StreamingState,
                                             serialized_name="wan_streamer_jax.streaming.StreamingState")


def select_rows(mask, new, old):
  """Per slot: `new` where `mask` (bool `[S]`) else `old`, for every leaf (slot axis first)."""
  def pick(a, b):
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, new, old)


def describe(state) -> dict:
  """Leaf path -> (shape, dtype name): what `check_state` compares."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return {jax.tree_util.keystr(p): (tuple(np.shape(x)), np.dtype(x.dtype).name) for p, x in leaves}


def check_state(state, expected: dict, what: str = "state") -> None:
  """ValueError unless `state` is a StreamingState shaped like `expected` (`describe(...)`)."""
  if not isinstance(state, StreamingState):
    raise ValueError(f"{what}: expected a StreamingState from engine.init_state(), received "
                     f"{type(state).__name__}")
  got = describe(state)
  if got.keys() != expected.keys():
    raise ValueError(f"{what}: expected a state of this engine's config (leaves {sorted(expected)[:3]}...), "
                     f"received one with a different structure (another config?)")
  for key, want in expected.items():
    if got[key] != want:
      raise ValueError(f"{what}{key}: expected shape/dtype {want}, received {got[key]} "
                       f"(a state from another config or slot count?)")
