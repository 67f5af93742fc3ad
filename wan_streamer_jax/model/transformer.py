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
from jax import lax

from wan_streamer_jax import kernels, schedule
from wan_streamer_jax.config import GROUPS, KINDS, Config
from wan_streamer_jax.kernels.xla import unit_chunk_tokens
from wan_streamer_jax.model.code_embedding import CodeDigitEmbedding
from wan_streamer_jax.model.depth_head import DEPTH_GROUPS, DepthHead, depth_segments, depth_slots
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
    # video / audio codes also sum one row per FSQ digit (model/code_embedding.py); None: the table alone
    self.digit_embed = nnx.Dict({
        k: CodeDigitEmbedding(getattr(cfg, k).levels, m.embed_dim, param_dtype=pd, rngs=rngs)
        for k in ("video", "audio")}) if m.code_digit_embed else None
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
    # the depth head draws text_out and audio_out slot by slot (model/depth_head.py); without one
    # every out slot comes from the parallel head above
    self.depth = DepthHead(m, len(depth_slots(self.layout)), rngs=rngs) if m.depth_layers else None

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
    x = jnp.concatenate([self.embed_kind(tok_u[:, :, layout.group_slices[g]], g.split("_")[0]) for g in GROUPS],
                        axis=2)
    x = x + (self.role_embed[...].astype(cd)[layout.role] + self.level_embed[...].astype(cd)[layout.level])
    return constrain(x.reshape(b, s, -1), ("batch", "seq", "act_embed"))

  def embed_kind(self, tokens, kind: str):
    """int32 tokens of one kind `[...]` -> their rows of the kind's table `[..., embed]` (compute dtype).

    With `model.code_digit_embed`, a video or audio code's row also sums its FSQ digits' rows.
    """
    cd = jnp.dtype(self.cfg.model.compute_dtype)
    x = jnp.take(self.embed[kind][...].astype(cd), tokens, axis=0, mode="clip")
    if self.digit_embed is not None and kind in self.digit_embed:
      x = x + self.digit_embed[kind](tokens, cd)
    return x

  def rope(self, unit_ids):
    """unit_ids int32 `[batch, seq]` -> RoPE `(cos, sin)` tables `[batch, seq, 1, head_dim // 2]`."""
    pos = self.layout.tile(unit_ids.shape[1] // self.layout.tokens_per_unit).positions(unit_ids)
    return rope_tables(rope_angles(pos, self.cfg.model.rope_sections, self.cfg.model.rope_theta))

  def parallel_kind(self, kind: str) -> bool:
    """False when the kind's out group is drawn by the depth head (its logits then come from it)."""
    return self.depth is None or f"{kind}_out" not in DEPTH_GROUPS

  def head(self, h, kind: str):
    """Normed states `[..., d]` -> the kind's float32 logits `[..., V_pad]` (padding `MASKED_LOGIT`)."""
    cd = jnp.dtype(self.cfg.model.compute_dtype)
    out = jnp.einsum("...d,dv->...v", h, self.heads[kind][...].astype(cd), preferred_element_type=jnp.float32)
    return jnp.where(jnp.asarray(self.layout.vocab_mask(kind)), out, MASKED_LOGIT)

  def logits(self, x, kind: str, groups=None):
    """Final norm + the kind's head at the kind's slots -> float32 `[b, n_kind, V_pad]`.

    Entries past the kind's vocabulary (table padding) are `MASKED_LOGIT`. With a depth
    head, a depth kind's slots here are its in group only (`merge_depth_logits` appends the out group).
    `groups` (None: all) keeps only the listed groups' slots (`layout.take_groups` order).
    """
    names = [g for g in self.layout.group_names(kind) if (groups is None or g in groups)
             and (self.parallel_kind(kind) or g.endswith("_in"))]
    h = self.layout.take_groups(x, kind, names)
    return constrain(self.head(self.final_norm(h), kind), ("batch", "seq", "act_vocab"))

  def merge_depth_logits(self, logits: dict, depth_logits: dict, groups=None) -> dict:
    """Appends each depth group's logits `[b, units, n_out, V]` to its kind's in-group logits, unit by unit
    (a depth group not in `groups`, when given, is left out)."""
    out = dict(logits)
    for kind, lg in depth_logits.items():
      if groups is not None and f"{kind}_out" not in groups:
        continue
      b, u = lg.shape[:2]
      base = logits[kind].reshape(b, u, logits[kind].shape[1] // u, lg.shape[-1])
      out[kind] = constrain(jnp.concatenate([base, lg], axis=2).reshape(b, -1, lg.shape[-1]),
                            ("batch", "seq", "act_vocab"))
    return out

  # -- the depth head ------------------------------------------------------------------------------

  def depth_forward(self, x, tokens):
    """Teacher-forced depth logits over every unit.

    Args:
      x: `[b, units * L, d]` the trunk's output (before the final norm).
      tokens: int32 `[b, units * L]` the input tokens; the depth head is fed each unit's next unit.
    Returns:
      kind -> float32 `[b, units, n_out, V_pad]` for the depth groups.
    """
    b, s, d = x.shape
    L = self.layout.tokens_per_unit
    u = s // L
    slots = depth_slots(self.layout)
    K = len(slots)
    h = x.reshape(b, u, L, d)[:, :, slots].reshape(b * u, K, d)
    nxt, _ = schedule.next_unit_targets(tokens, jnp.ones_like(tokens), L)
    nxt = nxt.reshape(b, u, L)[:, :, slots].reshape(b * u, K)
    segs = depth_segments(self.layout)
    emb = jnp.concatenate([self.embed_kind(nxt[:, a:z], kind) for kind, a, z in segs], axis=1)
    prev = jnp.concatenate([jnp.zeros_like(emb[:, :1]), emb[:, :-1]], axis=1)
    out = self.depth.forward(self.depth.inputs(h, prev, np.arange(K)))
    return {kind: self.head(out[:, a:z], kind).reshape(b, u, z - a, -1) for kind, a, z in segs}

  def depth_decode(self, x, keys: dict, draw, forced=None):
    """Draws one unit's depth slots one by one.

    Args:
      x: `[n, L, d]` the trunk's output of one unit per stream (before the final norm).
      keys: depth group -> uint32 `[n, 2]` its sampling keys (position i uses `fold_in(key, i)`).
      draw: `(logits [n, 1, V], keys [n, 2], kind) -> int32 [n, 1]` the sampler.
      forced: None, or depth group -> int32 `[n, n_out]` tokens fed to the next position instead of
        the draws (teacher forcing: the logits are then the training forward's).
    Returns:
      (group -> int32 `[n, n_out]` the draws, kind -> float32 `[n, 1, n_out, V_pad]` the logits they
      were drawn from)
    """
    n = x.shape[0]
    h = x[:, depth_slots(self.layout)]
    caches = self.depth.init_cache(n)
    prev = jnp.zeros((n, 1, x.shape[-1]), x.dtype)
    tokens, logits = {}, {}
    for (kind, a, z), group in zip(depth_segments(self.layout), DEPTH_GROUPS):
      def body(i, carry, kind=kind, a=a, group=group):
        caches, prev, toks, lgs = carry
        p = a + i
        inp = self.depth.inputs(lax.dynamic_slice_in_dim(h, p, 1, axis=1), prev, p[None])
        out, caches = self.depth.step(inp, caches, p)
        lg = self.head(out, kind)  # [n, 1, V]
        tok = draw(lg, jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys[group], i), kind)[:, 0]
        fed = tok if forced is None else lax.dynamic_index_in_dim(forced[group], i, axis=1, keepdims=False)
        toks = lax.dynamic_update_index_in_dim(toks, tok, i, axis=1)
        lgs = lax.dynamic_update_index_in_dim(lgs, lg[:, 0], i, axis=1)
        return caches, self.embed_kind(fed.astype(jnp.int32)[:, None], kind), toks, lgs

      V = padded_vocab(self.layout.vocab_sizes[kind])
      init = (caches, prev, jnp.zeros((n, z - a), jnp.int32), jnp.zeros((n, z - a, V), jnp.float32))
      caches, prev, toks, lgs = lax.fori_loop(0, z - a, body, init)
      tokens[group], logits[kind] = toks, lgs[:, None]
    return tokens, logits

  def attention_tiles(self, q_units: int | None = None) -> dict:
    """Chunk sizes for the `xla` attention (`kernels.xla.unit_chunk_tokens`: whole units; training
    windows of `q_units` units get the least visited area of chunks >= 128 tokens, decode
    (`q_units=None`) the largest whole-unit chunk <= 128 tokens). Pallas keeps its per-backend tiles
    (hardware alignment)."""
    if kernels.resolve_impl(self.cfg.model.attention_impl) != "xla":
      return {}
    m = self.cfg.model
    tile = unit_chunk_tokens(self.layout.tokens_per_unit, q_units, window_units=m.window_units,
                             sink_units=m.sink_units)
    return {"block_q": tile, "block_k": tile}

  def run_blocks(self, x, rope, ids, metadata, cache: KVCache | None = None, write=None):
    """The layer scan: one compiled block applied `num_layers` times.

    With `cache`, the stacked `k, v` `[layers, ...]` are carried through the scan (each
    layer writes its slice in place) and `write = (offset, keep)` (see `Attention`) says
    where this unit goes; returns `(x, k, v)`.
    """
    if cache is not None:
      offset, keep = write

      @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry,
                transform_metadata={nnx.PARTITION_NAME: "layers"})
      def decode_fn(block, carry):
        x, k, v, layer = carry
        x, (k, v) = block(x, rope, ids, metadata, (k, v, layer, offset, keep))
        return x, k, v, layer + 1

      x, k, v, _ = decode_fn(self.blocks, (x, cache.k, cache.v, jnp.int32(0)))
      return x, k, v

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

  def __call__(self, tokens, segment_ids=None, unit_ids=None, cache: KVCache | None = None,
               return_hidden: bool = False, depth_tokens=None, groups=None):
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
      return_hidden: with `cache`, also return the trunk's output `[batch, L, d]` (for `depth_decode`).
      depth_tokens: training only: int32 like `tokens`, what the depth head is teacher-forced with
        (default `tokens`; the train step passes the clean `target_tokens`, whose out slots differ from
        the inputs' where `train.own_stream_swap` swapped them).
      groups: the groups whose logits are computed (None: all). The train step passes
        `losses.weighted_groups(cfg)` (a group the loss weighs 0 costs no head matmul, softmax or
        gradient); decode callers that only draw pass `schedule.OUT_GROUPS` (the streaming engine, the
        own-history rollout: the in groups' heads are never read there).
    Returns:
      dict kind -> float32 logits `[batch, n_kind_slots, padded_vocab]` at the
      sequence positions `layout.tile(units).kind_indices[kind]` (with `groups`: the listed groups'
      slots only, `layout.take_groups` order); with `cache`,
      `(logits, new_cache)` (`+ (hidden,)`). With a depth head, training logits of the depth
      groups are its teacher-forced ones; in decode a depth kind's logits cover its in group
      only: its out group is drawn by `depth_decode`.
    """
    b, s = tokens.shape
    L = self.layout.tokens_per_unit
    if s % L:
      raise ValueError(f"tokens: expected a length that is a multiple of tokens_per_unit={L}, got {s}")
    if segment_ids is None:
      segment_ids = jnp.ones((b, s), jnp.int32)
    if cache is not None:
      return self._decode(tokens, segment_ids, unit_ids, cache, return_hidden, groups)
    x = self.trunk(tokens, segment_ids, unit_ids)
    logits = {k: self.logits(x, k, groups) for k in KINDS}
    if self.depth is not None:
      logits = self.merge_depth_logits(logits, self.depth_forward(x, tokens if depth_tokens is None else depth_tokens),
                                       groups)
    return logits

  def trunk(self, tokens, segment_ids=None, unit_ids=None):
    """The teacher-forced trunk: float `[batch, units * L, d]`, every position's output of the last
    block (before the final norm and the heads; what the heads and the depth head read).
    Arguments as `__call__`'s without a cache."""
    b, s = tokens.shape
    L = self.layout.tokens_per_unit
    if segment_ids is None:
      segment_ids = jnp.ones((b, s), jnp.int32)
    if unit_ids is None:
      unit_ids = jnp.broadcast_to(jnp.asarray(self.layout.tile(s // L).unit_index)[None], (b, s))
    ids = {"q_unit": unit_ids, "q_segment": segment_ids, "kv_unit": unit_ids, "kv_segment": segment_ids}
    metadata = self._metadata(unit_ids, unit_ids, segment_ids, segment_ids, self.attention_tiles(s // L))
    return self.run_blocks(self.embed_tokens(tokens), self.rope(unit_ids), ids, metadata)

  def _decode(self, tokens, segment_ids, unit_ids, cache: KVCache, return_hidden: bool, groups=None):
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
    metadata = self._metadata(unit_ids, kv_unit, segment_ids, kv_segment, self.attention_tiles())
    x = self.embed_tokens(tokens)
    x, k, v = self.run_blocks(x, self.rope(unit_ids), ids, metadata, cache, (offset, keep))
    out = ({kind: self.logits(x, kind, groups) for kind in KINDS}, KVCache(k, v, kv_unit, kv_segment))
    return out + (x,) if return_hidden else out

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
