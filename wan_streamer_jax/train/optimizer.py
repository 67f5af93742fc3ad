"""AdamW with linear warm-up, cosine decay and global-norm clipping."""

from __future__ import annotations

import optax

from wan_streamer_jax.config import OptimizerConfig


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  """Linear warm-up to the peak, then cosine decay; step 0 already trains (lr = peak / warmup)."""
  base = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=max(cfg.warmup_steps, 1),
      decay_steps=max(cfg.decay_steps, cfg.warmup_steps + 1),
      end_value=cfg.learning_rate * cfg.end_lr_fraction)
  return lambda step: base(step + 1)


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip_norm),
      optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay),
  )
