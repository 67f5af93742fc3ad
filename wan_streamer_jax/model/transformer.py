"""The interleaved audio-video-text Transformer (DESIGN §3).

Per-kind embedding tables (video, audio, text) shared by the in and out roles,
plus role and codebook-level embeddings; one trunk of pre-norm blocks stacked
with `nnx.vmap` and run by `nnx.scan` (one compiled layer); per-kind heads
evaluated only on that kind's slots. Vocabularies are padded to a multiple of
128 so the `vocab` axis shards; `logits` masks the padded entries (-1e9), so the
loss and the streaming sampler see the same distribution.

One forward serves training and decode: `model(tokens, segment_ids, unit_ids)`
is the teacher-forced forward over whole units; `model(unit_tokens, segment_ids,
unit_ids, cache=cache)` runs one unit per stream against a `KVCache`
(`kv_cache.py`) and returns `(logits, new_cache)`: the same blocks, the same
kernel (its decode path: q_len != kv_len), the same positions.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wan_streamer_jax import kernels, schedule
from wan_streamer_jax.config import GROUPS, KINDS, Config
from wan_streamer_jax.model.kv_cache import KVCache, ring_offset, write_rows
from wan_streamer_jax.model.layers import Block, RMSNorm, _param
from wan_streamer_jax.model.rope import rope_angles, rope_tables
from wan_streamer_jax.parallel.rules import constrain
from wan_streamer_jax.schedule import VOCAB_PAD, padded_vocab  # noqa: F401 (re-exported)

MASKED_LOGIT = -1e9  # padded vocabulary entries: never sampled, no mass in the loss

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class WanStreamer(nnx.Module):
  """tokens `[batch, units * L]` -> per-kind logits at that kind's slots."""

  def __init__(self, cfg: Config, *, rngs: nnx.Rngs):
    m = cfg.model
    self.cfg = cfg
    self.layout = schedule.unit_layout(cfg)
    pd = jnp.dtype(m.param_dtype)
    emb_init = nnx.initializers.normal(1.0)
    self.embed = nnx.Dict({
        k: _param(rngs, emb_init, (padded_vocab(self.layout.vocab_sizes[k]), m.embed_dim), ("vocab", "embed"), pd)
        for k in KINDS})
    self.role_embed = _param(rngs, emb_init, (2, m.embed_dim), ("table", "embed"), pd)
    self.level_embed = _param(rngs, emb_init, (self.layout.num_levels, m.embed_dim), ("table", "embed"), pd)

    @nnx.split_rngs(splits=m.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(r):
      return Block(m, rngs=r)

    self.blocks = make_blocks(rngs)
    self.final_norm = RMSNorm(m.embed_dim, m.norm_eps, param_dtype=pd, rngs=rngs)
    head_init = nnx.initializers.lecun_normal()
    self.heads = nnx.Dict({
        k: _param(rngs, head_init, (m.embed_dim, padded_vocab(self.layout.vocab_sizes[k])), ("embed", "vocab"), pd)
        for k in KINDS})

  # -- pieces shared with the streaming engine -------------------------------------------------

  def embed_tokens(self, tokens):
    """tokens int32 `[batch, n * L]` (whole units) -> `[batch, seq, embed]` in compute dtype.

    Each group is looked up in its kind's table through static slices of the
    `[batch, units, L]` view; the groups are concatenated back in unit order.
    """
    cd = jnp.dtype(self.cfg.model.compute_dtype)
    layout = self.layout
    b, s = tokens.shape
    lay = layout.tile(s // layout.tokens_per_unit)
    tok_u = tokens.reshape(b, lay.num_units, layout.tokens_per_unit)
    pieces = []
    for g in GROUPS:
      table = self.embed[g.split("_")[0]][...].astype(cd)
      pieces.append(jnp.take(table, tok_u[:, :, layout.group_slices[g]], axis=0, mode="clip"))
    x = jnp.concatenate(pieces, axis=2)
    x = x + (self.role_embed[...].astype(cd)[layout.role] + self.level_embed[...].astype(cd)[layout.level])
    return constrain(x.reshape(b, s, -1), ("batch", "seq", "act_embed"))

  def rope(self, unit_ids):
    """unit_ids int32 `[batch, seq]` -> RoPE `(cos, sin)` tables `[batch, seq, 1, head_dim // 2]`."""
    pos = self.layout.tile(unit_ids.shape[1] // self.layout.tokens_per_unit).positions(unit_ids)
    return rope_tables(rope_angles(pos, self.cfg.model.rope_sections, self.cfg.model.rope_theta))

  def logits(self, x, kind: str):
    """Final norm + the kind's head at the kind's slots -> float32 `[b, n_kind, V_pad]`.

    Entries past the kind's vocabulary (table padding) are `MASKED_LOGIT`.
    """
    h = self.final_norm(self.layout.take_kind(x, kind))
    cd = jnp.dtype(self.cfg.model.compute_dtype)
    out = jnp.einsum("bnd,dv->bnv", h, self.heads[kind][...].astype(cd),
                     preferred_element_type=jnp.float32)
    out = jnp.where(jnp.asarray(self.layout.vocab_mask(kind)), out, MASKED_LOGIT)
    return constrain(out, ("batch", "seq", "act_vocab"))

  def attention_tiles(self) -> dict:
    """Chunk sizes for the `xla` attention: whole units (>= 128 tokens), so that chunk
    pairs are fully visible or fully masked and no element mask is needed in training
    (measured on CPU, small config: 26% faster fwd+bwd than 128-token chunks).
    Pallas keeps its per-backend tiles (hardware alignment)."""
    if kernels.resolve_impl(self.cfg.model.attention_impl) != "xla":
      return {}
    L = self.layout.tokens_per_unit
    tile = L * max(1, 128 // L)
    return {"block_q": tile, "block_k": tile}

  def run_blocks(self, x, rope, ids, metadata, cache: KVCache | None = None, write=None):
    """The layer scan: one compiled block applied `num_layers` times.

    With `cache`, its per-layer `k, v` are scanned with the blocks and `write =
    (offset, keep)` (see `Attention`) says where this unit goes; returns `(x, k, v)`.
    """
    if cache is not None:
      offset, keep = write

      @nnx.scan(in_axes=(0, nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0, 0),
                transform_metadata={nnx.PARTITION_NAME: "layers"})
      def decode_fn(block, carry, k, v):
        carry, (k, v) = block(carry, rope, ids, metadata, (k, v, offset, keep))
        return carry, k, v

      return decode_fn(self.blocks, x, cache.k, cache.v)

    policy = self.cfg.model.remat_policy

    def body(block, carry):
      return block(carry, rope, ids, metadata)

    if policy != "none":
      body = nnx.remat(body, policy=_REMAT_POLICIES[policy], prevent_cse=False)

    @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry,
              transform_metadata={nnx.PARTITION_NAME: "layers"})
    def scan_fn(block, carry):
      return body(block, carry)

    return scan_fn(self.blocks, x)

  def _metadata(self, q_unit, kv_unit, q_segment, kv_segment, tiles: dict):
    m = self.cfg.model
    return kernels.prepare_attention(q_unit, kv_unit, q_segment, kv_segment, window_units=m.window_units,
                                     sink_units=m.sink_units, impl=m.attention_impl, **tiles)

  # -- one forward: training (cache=None) and decode ---------------------------------------------

  def __call__(self, tokens, segment_ids=None, unit_ids=None, cache: KVCache | None = None):
    """Teacher-forced forward, or one unit per stream against a KV cache.

    Args:
      tokens: int32 `[batch, units * L]` in the unit layout (with `cache`: one unit, `[batch, L]`).
      segment_ids: int32 `[batch, seq]` packed-conversation ids (0 = padding);
        default one segment. With `cache`, a row whose segment is 0 is inactive:
        its cache is left bit-identical (its logits are meaningless).
      unit_ids: int32 `[batch, seq]` unit index inside its segment; default the
        plain unit index. With `cache` required: the stream's absolute unit
        counter (from 0 at the conversation start), constant over the unit.
      cache: None (training), or a `KVCache` holding the streams' earlier units.
    Returns:
      dict kind -> float32 logits `[batch, n_kind_slots, padded_vocab]` at the
      sequence positions `layout.tile(units).kind_indices[kind]`; with `cache`,
      `(logits, new_cache)`.
    """
    b, s = tokens.shape
    L = self.layout.tokens_per_unit
    if s % L:
      raise ValueError(f"tokens: expected a length that is a multiple of tokens_per_unit={L}, got {s}")
    if segment_ids is None:
      segment_ids = jnp.ones((b, s), jnp.int32)
    if cache is not None:
      return self._decode(tokens, segment_ids, unit_ids, cache)
    lay = self.layout.tile(s // L)
    if unit_ids is None:
      unit_ids = jnp.broadcast_to(jnp.asarray(lay.unit_index)[None], (b, s))
    ids = {"q_unit": unit_ids, "q_segment": segment_ids, "kv_unit": unit_ids, "kv_segment": segment_ids}
    metadata = self._metadata(unit_ids, unit_ids, segment_ids, segment_ids, self.attention_tiles())
    x = self.embed_tokens(tokens)
    x = self.run_blocks(x, self.rope(unit_ids), ids, metadata)
    return {k: self.logits(x, k) for k in KINDS}

  def _decode(self, tokens, segment_ids, unit_ids, cache: KVCache):
    b, s = tokens.shape
    L = self.layout.tokens_per_unit
    m = self.cfg.model
    if s != L:
      raise ValueError(f"tokens: with a cache, expected one unit per stream [batch, {L}], got {tokens.shape}")
    if unit_ids is None or tuple(unit_ids.shape) != (b, L):
      raise ValueError(f"unit_ids: with a cache, expected the streams' unit counters int32 [{b}, {L}], "
                       f"got {None if unit_ids is None else tuple(unit_ids.shape)}")
    want = (m.num_layers, b, cache.capacity_tokens, m.num_kv_heads, m.head_dim)
    if tuple(cache.k.shape) != want or cache.capacity_tokens % L:
      raise ValueError(f"cache: expected k/v of shape {want} (whole units of {L} tokens), got {cache.k.shape}")
    offset = ring_offset(unit_ids[:, 0], sink_units=m.sink_units,
                         capacity_units=cache.capacity_tokens // L, tokens_per_unit=L)
    keep = segment_ids[:, 0] != 0
    kv_unit = write_rows(cache.unit_ids, unit_ids, offset, keep)
    kv_segment = write_rows(cache.segment_ids, segment_ids, offset, keep)
    ids = {"q_unit": unit_ids, "q_segment": segment_ids, "kv_unit": kv_unit, "kv_segment": kv_segment}
    # whole-unit chunks here too (measured: one cache-sized key chunk costs 40% more CPU time)
    metadata = self._metadata(unit_ids, kv_unit, segment_ids, kv_segment, self.attention_tiles())
    x = self.embed_tokens(tokens)
    x, k, v = self.run_blocks(x, self.rope(unit_ids), ids, metadata, cache, (offset, keep))
    return {kind: self.logits(x, kind) for kind in KINDS}, KVCache(k, v, kv_unit, kv_segment)

  def init_cache(self, batch: int, max_units: int | None = None) -> KVCache:
    """An empty `KVCache` for `batch` streams: `sink_units + window_units` units (or `max_units`)."""
    from wan_streamer_jax.model.kv_cache import cache_units, init_cache
    m = self.cfg.model
    units = cache_units(m.window_units, m.sink_units, max_units)
    return init_cache(layers=m.num_layers, batch=batch, units=units, tokens_per_unit=self.layout.tokens_per_unit,
                      kv_heads=m.num_kv_heads, head_dim=m.head_dim, dtype=jnp.dtype(m.compute_dtype))


def create_model(cfg: Config, seed: int = 0) -> WanStreamer:
  """Builds the model with unsharded parameters (use `train.state` for sharded creation)."""
  with nnx.use_eager_sharding(False):
    return WanStreamer(cfg, rngs=nnx.Rngs(seed))


@functools.lru_cache(maxsize=8)
def param_count(cfg: Config) -> int:
  abstract = nnx.eval_shape(lambda: create_model(cfg))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))))
