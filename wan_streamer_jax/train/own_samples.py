"""Scheduled sampling of the model's own streams (`train.own_stream_sampling`, Self-Forcing-lite).

Teacher forcing feeds the model the corpus' own voice, face and text as inputs; streaming feeds it its
own predictions. With `train.own_stream_sampling = p` each train step first runs the model without a
gradient on the clean batch, takes its argmax prediction of every unit's out slots (`video_out`,
`audio_out`, `text_out`), and in a random `p` of the units replaces the out-slot *inputs* with what the
model predicted for them one unit before. The gradient step then runs on the mixed inputs with the clean
targets (the loss and the depth head read `target_tokens`), so the model learns to continue from its own
mistakes. The prediction is one parallel next-unit pass: with a depth head its slots are the depth
head's teacher-forced argmax (each slot given the unit's true earlier slots), not a slot-by-slot decode.
Costs one more forward per step (`flops.train_flops_per_token`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wan_streamer_jax import schedule
from wan_streamer_jax.config import Config

OWN_GROUPS = schedule.OUT_GROUPS  # video_out, audio_out, text_out: what the model reads back when streaming


def predicted_out_slots(layout: schedule.UnitLayout, logits: dict) -> dict:
  """Model logits -> group -> int32 `[batch, units, group_size]`: the argmax of each out group's slots.

  Entry `[:, t]` is the model's prediction, made at unit `t`, of unit `t + 1`'s slots of that group.
  `logits`: kind -> float32 `[batch, units * n_kind, padded_vocab]` in `layout.take_kind` order.
  """
  out = {}
  for g in OWN_GROUPS:
    if not layout.group_size(g):
      continue
    kind = g.split("_")[0]
    ids = jnp.argmax(logits[kind], axis=-1).astype(jnp.int32)
    b = ids.shape[0]
    n_kind = sum(sl.stop - sl.start for sl in layout.kind_groups(kind))
    out[g] = ids.reshape(b, -1, n_kind)[:, :, layout.slice_in_kind(g)]
  return out


def units_fed(layout: schedule.UnitLayout, tokens, segment_ids, unit_ids, chosen):
  """bool `[batch, units]`: the chosen units whose previous unit is their predecessor (same segment,
  the previous unit id), so something drew their out slots one unit before; never unit 0 of a segment,
  the first unit after the sinks' gap or padding. `chosen`: bool `[batch, units]`."""
  L = layout.tokens_per_unit
  b, s = tokens.shape
  _, valid = schedule.next_unit_targets(tokens, segment_ids, L, unit_ids)
  had_prediction = valid.reshape(b, s // L, L)[:, :-1, 0]  # unit t predicted unit t + 1
  return jnp.concatenate([jnp.zeros((b, 1), bool), had_prediction & chosen[:, 1:]], axis=1)


def mix_own_predictions(layout: schedule.UnitLayout, tokens, predicted: dict, segment_ids, unit_ids, chosen):
  """Replaces the out slots of the chosen units with the model's prediction of them.

  Args:
    tokens: int32 `[batch, units * L]` (clean inputs).
    predicted: `predicted_out_slots` of the model on `tokens`.
    segment_ids, unit_ids: int32 `[batch, units * L]` as in the batch.
    chosen: bool `[batch, units]`: which units take the model's prediction. A unit whose previous
      unit is not its predecessor (unit 0 of a segment, the first unit after the sinks' gap, padding)
      keeps its clean slots whatever `chosen` says.
  Returns:
    int32 `[batch, units * L]`: `tokens` with unit `t`'s out slots set to `predicted[g][:, t - 1]` where
    chosen and the previous unit predicted it.
  """
  L = layout.tokens_per_unit
  b, s = tokens.shape
  u = s // L
  take = units_fed(layout, tokens, segment_ids, unit_ids, chosen)
  units = jnp.asarray(tokens).reshape(b, u, L)
  for g, pred in predicted.items():
    sl = layout.group_slices[g]
    shifted = jnp.concatenate([units[:, :1, sl], pred[:, :-1]], axis=1)  # unit t <- prediction made at t - 1
    units = units.at[:, :, sl].set(jnp.where(take[:, :, None], shifted, units[:, :, sl]))
  return units.reshape(b, s)


def step_key(cfg: Config, step) -> jax.Array:
  """The sampling key of optimizer step `step` (a resumed run draws the same units again)."""
  return jax.random.fold_in(jax.random.key(cfg.train.seed), step)


def with_own_predictions(cfg: Config, model, batch: dict, key) -> dict:
  """The batch a train step learns from under `train.own_stream_sampling = p > 0`.

  Runs `model` once on the clean batch (call it outside the differentiated function) and returns the
  batch with `tokens` mixed (`mix_own_predictions`, each unit chosen with probability p) and
  `target_tokens` clean (the batch's own, or a copy of its clean `tokens`), so the loss and the depth
  head stay teacher-forced.
  """
  layout = schedule.unit_layout(cfg)
  tokens = batch["tokens"]
  clean = batch.get("target_tokens", tokens)
  logits = model(tokens, batch["segment_ids"], batch["unit_ids"], depth_tokens=clean)
  predicted = predicted_out_slots(layout, logits)  # int argmax: no gradient flows through the mix
  b, s = tokens.shape
  chosen = jax.random.bernoulli(key, cfg.train.own_stream_sampling, (b, s // layout.tokens_per_unit))
  mixed = mix_own_predictions(layout, tokens, predicted, batch["segment_ids"], batch["unit_ids"], chosen)
  return {**batch, "tokens": mixed, "target_tokens": clean}
