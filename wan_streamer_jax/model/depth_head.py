"""The depth head: the next unit's text and audio slots drawn one after another (Moshi's depformer).

Next-unit prediction draws every slot of the model's next unit in parallel from
the trunk's last hidden states (DESIGN §1). For video and for timing that is
enough; for words it is not: the 4 text bytes of a unit, and the 16 audio codes
(4 frames x 4 residual levels), are then sampled independently, and a model
that knows the word still spells "Ithi k" for "I think" (measured on the demo,
issue 10). The depth head makes those slots autoregressive *inside* the unit:

    position k of the depth sequence  (the k-th slot of `DEPTH_GROUPS`: text_out's
                                       bytes, then audio_out frame-major, level-minor)
    input_k  = in_norm(h[slot_k]) + embed(token of slot_{k-1} in the next unit) + pos_k
    output_k = logits of the token of slot_k in the next unit (the kind's main head)

where `h` is the trunk's output at unit t (the same vector the parallel head
reads), the embedding table is the trunk's (one table per kind) and attention is
causal over k. Text comes first, so the unit's voice is drawn knowing its bytes
(Moshi's inner monologue, inside one unit). Training is teacher-forced over all
units at once (`[batch * units, K]` sequences, a few percent of the trunk's
FLOPs); streaming draws the K slots one by one against a K-row cache per layer
(`decode`), which gives the training logits exactly when fed the same tokens
(`tests/test_depth_head.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from wan_streamer_jax.config import ModelConfig
from wan_streamer_jax.model.layers import MLP, RMSNorm, _param

DEPTH_GROUPS = ("text_out", "audio_out")  # drawn in this order


def depth_slots(layout) -> np.ndarray:
  """int32 `[K]`: the unit slots of `DEPTH_GROUPS`, in depth order."""
  return np.concatenate([np.arange(layout.group_slices[g].start, layout.group_slices[g].stop)
                         for g in DEPTH_GROUPS]).astype(np.int32)


def depth_segments(layout) -> list[tuple[str, int, int]]:
  """`(kind, start, stop)` of each depth group inside the depth sequence."""
  out, at = [], 0
  for g in DEPTH_GROUPS:
    n = layout.group_size(g)
    out.append((g.split("_")[0], at, at + n))
    at += n
  return out


class DepthAttention(nnx.Module):
  """Causal multi-head attention over the K depth positions (training), or one position
  against a `[n, K, heads, head_dim]` cache (decode)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    pd = jnp.dtype(cfg.param_dtype)
    d, h, hd = cfg.embed_dim, cfg.num_heads, cfg.head_dim
    self.wqkv = _param(rngs, nnx.initializers.lecun_normal(in_axis=0, out_axis=(1, 2, 3)), (d, 3, h, hd),
                       ("embed", None, "heads", "head_dim"), pd)
    self.wo = _param(rngs, nnx.initializers.lecun_normal(in_axis=(0, 1), out_axis=2), (h, hd, d),
                     ("heads", "head_dim", "embed"), pd)
    self.compute_dtype = jnp.dtype(cfg.compute_dtype)

  def __call__(self, x, kv=None, pos=None):
    """x `[n, s, d]` -> `[n, s, d]`; with `kv=(k, v)` `[n, K, h, hd]` and int32 `pos` (s == 1):
    `(out, (k, v))` with this position written at `pos`."""
    cd = self.compute_dtype
    qkv = jnp.einsum("nsd,dchk->cnshk", x, self.wqkv[...].astype(cd))
    q, k, v = qkv[0], qkv[1], qkv[2]
    if kv is None:
      s = x.shape[1]
      mask = np.tril(np.ones((s, s), bool))
    else:
      k_cache, v_cache = kv
      k = lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), pos, axis=1)
      v = lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), pos, axis=1)
      kv = (k, v)
      mask = (jnp.arange(k.shape[1]) <= pos)[None]
    scores = jnp.einsum("nqhk,nshk->nhqs", q, k, preferred_element_type=jnp.float32) / np.sqrt(q.shape[-1])
    scores = jnp.where(mask[None, None], scores, -1e30)
    attn = jnp.einsum("nhqs,nshk->nqhk", jax.nn.softmax(scores, axis=-1).astype(cd), v)
    out = jnp.einsum("nshk,hkd->nsd", attn, self.wo[...].astype(cd))
    return out if pos is None else (out, kv)


class DepthBlock(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    pd = jnp.dtype(cfg.param_dtype)
    self.attn_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, param_dtype=pd, rngs=rngs)
    self.attn = DepthAttention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, param_dtype=pd, rngs=rngs)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x, kv=None, pos=None):
    a = self.attn(self.attn_norm(x), kv, pos)
    a, kv = (a, None) if pos is None else a
    x = x + a
    x = x + self.mlp(self.mlp_norm(x))
    return x if pos is None else (x, kv)


class DepthHead(nnx.Module):
  """`depth_layers` blocks of the trunk's width over the K = |text_out| + |audio_out| depth positions."""

  def __init__(self, cfg: ModelConfig, num_positions: int, *, rngs: nnx.Rngs):
    pd = jnp.dtype(cfg.param_dtype)
    self.cfg = cfg
    self.in_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, param_dtype=pd, rngs=rngs)
    self.pos_embed = _param(rngs, nnx.initializers.normal(1.0), (num_positions, cfg.embed_dim),
                            ("table", "embed"), pd)
    self.blocks = nnx.List([DepthBlock(cfg, rngs=rngs) for _ in range(cfg.depth_layers)])
    self.out_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, param_dtype=pd, rngs=rngs)

  def inputs(self, h, prev_embed, positions):
    """h `[n, s, d]` trunk states at the positions' slots, prev_embed `[n, s, d]` the previous
    slot's token embedding (zeros at position 0), positions static `[s]` -> block input."""
    cd = jnp.dtype(self.cfg.compute_dtype)
    return self.in_norm(h).astype(cd) + prev_embed + self.pos_embed[...].astype(cd)[positions]

  def forward(self, x):
    """Teacher-forced: block input `[n, K, d]` -> normed output `[n, K, d]`."""
    for block in self.blocks:
      x = block(x)
    return self.out_norm(x)

  def init_cache(self, n: int):
    m = self.cfg
    shape = (n, self.pos_embed.shape[0], m.num_heads, m.head_dim)
    z = jnp.zeros(shape, jnp.dtype(m.compute_dtype))
    return [(z, z) for _ in self.blocks]

  def step(self, x, caches, pos):
    """One position: block input `[n, 1, d]`, per-layer caches, int32 `pos` -> (normed `[n, 1, d]`, caches)."""
    new = []
    for block, kv in zip(self.blocks, caches):
      x, kv = block(x, kv, pos)
      new.append(kv)
    return self.out_norm(x), new
