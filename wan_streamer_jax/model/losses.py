"""Next-unit cross-entropy per (kind, role) group, accuracy, and z-loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, KINDS, Config, TextConfig
from wan_streamer_jax.run_config import MARK_ANSWER, MARK_METRICS, MARK_PAUSE, MARK_REPLY, MARK_STOP


def weighted_groups(cfg: Config) -> tuple[str, ...]:
  """The groups the loss reads: those with a positive weight in `cfg.loss` (every group when the z-loss
  is on: it reads every valid target's logsumexp). The train step computes logits for these only."""
  if cfg.loss.z_loss:
    return GROUPS
  return tuple(g for g in GROUPS if getattr(cfg.loss, g) > 0)


def next_unit_loss(cfg: Config, logits: dict, tokens, segment_ids, unit_ids=None, target_tokens=None,
                   loss_marks=None, groups=None):
  """Weighted next-unit cross-entropy.

  Args:
    logits: kind -> float32 `[batch, n_kind, padded_vocab]` (model output; with `groups`, the model's
      output for the same `groups`: each kind's listed groups' slots only).
    tokens: int32 `[batch, units * L]`.
    segment_ids: int32 `[batch, units * L]` (0 = padding).
    unit_ids: optional int32 `[batch, units * L]`: no target across a jump of unit ids.
    target_tokens: optional int32 `[batch, units * L]`: the targets are read from it (one unit later)
      instead of from `tokens` (`loss.text_in_target="heard"`: text_in's targets differ from its inputs).
    loss_marks: optional int32 `[batch, units * L]` of `run_config.MARK_*` codes (like `tokens`, read one
      unit later as the targets are; `data_pipelines/loss_marks.py`): text_out targets marked REPLY or
      ANSWER weigh `loss.answer_weight` more, PAUSE `loss.pause_weight`, STOP `loss.stop_weight`.
    groups: None (every group), or the groups `logits` cover (`weighted_groups(cfg)` or a superset:
      a group left out must weigh 0, so the loss is the same); metrics are reported for these only.
  Returns:
    (loss scalar, metrics dict): the loss weighs each target by its group's weight (`cfg.loss`; text_in's
    PAD targets times `loss.text_in_pad_weight`, marked targets as above); `loss/<group>` mean CE over valid
    targets (unweighted), `acc/<group>` accuracy, `loss/z`, `tokens/valid`; with `loss_marks` also
    `loss/answer`, `acc/answer`, `tokens/answer` (the answer's bytes: mean CE, accuracy, count; 0 when a
    batch holds none) and the same for `reply` (the answer's whole reply window), `pause` and `stop`.
  """
  layout = schedule.unit_layout(cfg)
  L = layout.tokens_per_unit
  lay = layout.tile(tokens.shape[1] // L)
  targets, valid = schedule.next_unit_targets(tokens if target_tokens is None else target_tokens,
                                              segment_ids, L, unit_ids)
  marks = None if loss_marks is None else schedule.next_unit_targets(loss_marks, segment_ids, L, unit_ids)[0]
  group = lay.group
  weight = lay.loss_weight
  total, total_w, z_total, n_total = 0.0, 0.0, 0.0, 0.0
  metrics = {}
  if groups is not None and set(weighted_groups(cfg)) - set(groups):
    raise ValueError(f"groups: expected every group the loss weighs {weighted_groups(cfg)}, got {tuple(groups)}")
  for k in KINDS:
    names = [g for g in layout.group_names(k) if groups is None or g in groups]
    if not names:
      continue
    take = lambda x, k=k, names=names: layout.take_groups(x, k, names)  # noqa: E731
    lg = logits[k]  # padded vocabulary already masked by the model (`WanStreamer.logits`)
    tgt = take(targets)
    val = take(valid).astype(jnp.float32)
    lse = jax.nn.logsumexp(lg, axis=-1)
    tgt_logit = jnp.take_along_axis(lg, tgt[..., None], axis=-1)[..., 0]
    ce = lse - tgt_logit
    correct = (jnp.argmax(lg, axis=-1) == tgt).astype(jnp.float32)
    g_of_slot = take(group[None])[0]
    w = val * jnp.asarray(take(weight[None]))
    if k == "text" and cfg.loss.text_in_pad_weight != 1.0:
      is_text_in = (g_of_slot == GROUPS.index("text_in"))[None]
      w = w * jnp.where(is_text_in & (tgt == TextConfig.PAD), cfg.loss.text_in_pad_weight, 1.0)
    if k == "text" and marks is not None:
      m = take(marks)
      reply = (m == MARK_REPLY) | (m == MARK_ANSWER)
      w = w * jnp.asarray(cfg.loss.mark_weights(), jnp.float32)[m]
      selected = {"answer": m == MARK_ANSWER, "reply": reply, "pause": m == MARK_PAUSE, "stop": m == MARK_STOP}
      for name in MARK_METRICS:
        sel = selected[name].astype(jnp.float32) * val
        n_sel = jnp.sum(sel)
        metrics[f"loss/{name}"] = jnp.sum(ce * sel) / jnp.maximum(n_sel, 1.0)
        metrics[f"acc/{name}"] = jnp.sum(correct * sel) / jnp.maximum(n_sel, 1.0)
        metrics[f"tokens/{name}"] = n_sel
    total += jnp.sum(ce * w)
    total_w += jnp.sum(w)
    z_total += jnp.sum(jnp.square(lse) * val)
    n_total += jnp.sum(val)
    for gi, g in enumerate(GROUPS):
      sel = (g_of_slot == gi).astype(np.float32)
      if not sel.any():
        continue
      vg = val * sel[None]
      n = jnp.maximum(jnp.sum(vg), 1.0)
      metrics[f"loss/{g}"] = jnp.sum(ce * vg) / n
      metrics[f"acc/{g}"] = jnp.sum(correct * vg) / n
  loss = total / jnp.maximum(total_w, 1e-9)
  z = z_total / jnp.maximum(n_total, 1.0)
  metrics["loss/z"] = z
  metrics["tokens/valid"] = n_total
  if cfg.loss.z_loss:
    loss = loss + cfg.loss.z_loss * z
  metrics["loss"] = loss
  return loss, metrics
