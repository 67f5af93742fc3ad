"""Analytic FLOP, parameter and KV-cache accounting (for describe, bench and MFU).

Model FLOPs count matmuls only (2 per multiply-add), attention at its
*visible* block-causal context, and training as 3x forward (MaxText's
convention: no remat recompute counted).
"""

from __future__ import annotations

import dataclasses

from wan_streamer_jax import schedule
from wan_streamer_jax.config import KINDS, UNIT_SECONDS, Config
from wan_streamer_jax.model.depth_head import depth_slots
from wan_streamer_jax.model.transformer import padded_vocab
from wan_streamer_jax.train.own_history import rollout_rows


@dataclasses.dataclass(frozen=True)
class ModelCost:
  params: int                 # all parameters
  matmul_params_per_token: float  # trunk + this token's head, averaged over the unit
  kv_bytes_per_unit: int      # K and V of one unit, all layers, compute dtype
  tokens_per_unit: int


def model_cost(cfg: Config, groups=None) -> ModelCost:
  """`groups` (None: all): the groups whose head logits are computed (`matmul_params_per_token` counts
  only their heads; the train step's forward computes `losses.weighted_groups(cfg)`)."""
  m = cfg.model
  layout = schedule.unit_layout(cfg)
  L = layout.tokens_per_unit
  per_layer = (m.embed_dim * m.num_heads * m.head_dim * 2 + m.embed_dim * m.num_kv_heads * m.head_dim * 2
               + 3 * m.embed_dim * m.mlp_dim)
  trunk = m.num_layers * per_layer
  head_per_token = sum(layout.group_size(g) * m.embed_dim * padded_vocab(layout.vocab_sizes[g.split("_")[0]])
                       for g in layout.group_slices if groups is None or g in groups) / L
  embeds = sum(padded_vocab(layout.vocab_sizes[k]) * m.embed_dim * 2 for k in KINDS)
  small = (2 + layout.num_levels) * m.embed_dim + (2 * m.num_layers + 1) * m.embed_dim
  # the depth head (model/depth_head.py): its layers run over the K depth slots of every unit
  # (multi-head qkv + out + MLP), its logits are the kind heads' (counted above)
  K = len(depth_slots(layout)) if m.depth_layers else 0
  depth_layer = 4 * m.embed_dim * m.num_heads * m.head_dim + 3 * m.embed_dim * m.mlp_dim
  depth = m.depth_layers * depth_layer
  depth_small = (K + 2 + 2 * m.depth_layers) * m.embed_dim if m.depth_layers else 0
  digits = sum(sum(getattr(cfg, k).levels) for k in ("video", "audio")) * m.embed_dim if m.code_digit_embed else 0
  params = trunk + embeds + small + depth + depth_small + digits
  dtype_bytes = 2 if m.compute_dtype == "bfloat16" else 4
  kv = m.num_layers * 2 * m.num_kv_heads * m.head_dim * L * dtype_bytes
  return ModelCost(params=int(params), matmul_params_per_token=trunk + head_per_token + depth * K / L,
                   kv_bytes_per_unit=int(kv), tokens_per_unit=L)


def visible_keys_per_query(cfg: Config, units: int) -> float:
  """Average number of visible keys per query in a `units`-long block-causal sequence."""
  m, L = cfg.model, schedule.unit_layout(cfg).tokens_per_unit
  total = 0
  for t in range(units):
    seen = t + 1
    if m.window_units is not None:
      seen = min(seen, m.window_units) + min(m.sink_units, max(0, t + 1 - m.window_units))
    total += seen * L
  return total / units


def forward_flops_per_token(cfg: Config, units: int, groups=None) -> float:
  m = cfg.model
  attn = 4 * visible_keys_per_query(cfg, units) * m.num_heads * m.head_dim * m.num_layers
  return 2 * model_cost(cfg, groups).matmul_params_per_token + attn


def train_flops_per_token(cfg: Config, units: int | None = None) -> float:
  """Forward + backward (3 forwards, the heads of `losses.weighted_groups(cfg)` only), one more forward
  (every head) under `train.own_stream_sampling`, and under `train.own_history` the rollout of its rows
  (`own_history.rollout_rows` of the batch, unsharded: the out groups' heads only, as the streaming
  step; the depth head's slot-by-slot draws counted as their forward)."""
  from wan_streamer_jax.model.losses import weighted_groups
  units = units or cfg.train.units_per_example
  rows = rollout_rows(cfg.train.own_history, cfg.train.batch_size)
  return (3 * forward_flops_per_token(cfg, units, weighted_groups(cfg))
          + (cfg.train.own_stream_sampling > 0) * forward_flops_per_token(cfg, units)
          + rows / cfg.train.batch_size * forward_flops_per_token(cfg, units, schedule.OUT_GROUPS))


def streaming_flops_per_unit(cfg: Config, context_units: int) -> float:
  """Forward FLOPs of one streaming step (one unit of queries) with `context_units` cached (the out
  groups' heads only: the engine computes no in-group logits unless asked for them)."""
  m = cfg.model
  c = model_cost(cfg, schedule.OUT_GROUPS)
  ctx = context_units + 1
  if m.window_units is not None:
    ctx = min(ctx, m.window_units + m.sink_units)
  attn = 4 * ctx * c.tokens_per_unit * m.num_heads * m.head_dim * m.num_layers
  return c.tokens_per_unit * (2 * c.matmul_params_per_token + attn)


def kv_cache_bytes(cfg: Config, seconds: float) -> int:
  """KV-cache bytes after `seconds` of stream (bounded by window + sinks if set)."""
  m = cfg.model
  units = int(round(seconds / UNIT_SECONDS))
  if m.window_units is not None:
    units = min(units, m.window_units + m.sink_units)
  return units * model_cost(cfg).kv_bytes_per_unit
