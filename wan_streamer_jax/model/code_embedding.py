"""Per-digit embeddings of FSQ codes (`model.code_digit_embed`).

An FSQ code is a mixed-radix number, `code = sum_i digit_i * prod(levels[:i])`
(`codecs/fsq.py`), and each digit is one quantised latent channel of the codec.
A plain embedding table gives every code its own row, learnt only at the steps
that code occurs in: of the demo's 8000 video codes most are rare, and the few
that carry the user's coloured shape are rarer still. `CodeDigitEmbedding` adds
`sum_i rows[offset_i + digit_i]` to the table's row, so the codec's latent
channels reach the trunk directly and a rare code starts from what its digits
mean. Ids past the codebook (MISSING, table padding) get no digit rows.

    digits = CodeDigitEmbedding(levels=(8, 8, 5, 5, 5), embed_dim=128, param_dtype=jnp.float32, rngs=rngs)
    x = table_rows + digits(tokens, jnp.float32)     # tokens int32 [...] -> [..., 128]
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wan_streamer_jax.codecs.fsq import fsq_digits, valid_code_mask
from wan_streamer_jax.model.layers import _param


class CodeDigitEmbedding(nnx.Module):
  """`sum(levels)` rows, `[sum(levels), embed]`: row `offset_i + d` is digit i's embedding at value d."""

  def __init__(self, levels: tuple[int, ...], embed_dim: int, *, param_dtype, rngs: nnx.Rngs):
    self.levels = tuple(int(v) for v in levels)
    # D rows of std 1/sqrt(D) sum to std 1, the table rows' scale
    init = nnx.initializers.normal(1.0 / math.sqrt(len(self.levels)))
    self.rows = _param(rngs, init, (sum(self.levels), embed_dim), ("table", "embed"), param_dtype)

  def __call__(self, tokens: jax.Array, dtype) -> jax.Array:
    """int tokens `[...]` -> the sum of their digits' rows `[..., embed]` in `dtype` (0 past the codebook)."""
    offsets = np.cumsum([0] + list(self.levels[:-1])).astype(np.int32)
    rows = jnp.take(self.rows[...].astype(dtype), fsq_digits(tokens, self.levels) + offsets, axis=0)
    return jnp.where(valid_code_mask(tokens, self.levels)[..., None], rows.sum(axis=-2), jnp.zeros((), dtype))
