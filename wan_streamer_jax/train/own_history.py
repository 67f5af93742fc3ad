"""Own-history training (`train.own_history`): the model's own free-running streams as its inputs.

Teacher forcing shows the model the corpus' voice, face and text as its own history; streaming shows
it what it drew itself. Where the two differ the model has never been trained: the demo's model, free-
running, takes over a story's pause, its voice then runs over the user's next part, and a user talking
over the model is what the corpus' interrupt task looks like, so it answers the story with the interrupt
task's replies (README "Why it answers a story's pause"). One-step predictions (`own_samples.py`) never
show it its own multi-unit mistakes; this does, the DAgger way: roll the model out, label the states it
visits with the recording's next unit.

With `train.own_history = p`, each train step first rolls the model out without a gradient over its
window, one unit at a time against a KV cache as the streaming engine does (`draw_out_groups`, the
engine's sampling): the user's streams (in slots) are the window's, and in a random `p` of the rows
the out slots (`video_out`, `audio_out`, `text_out`) of every unit outside the recording's own turns
are what the rollout drew for that unit one unit before. Inside the recording's turns (units within
`TURN_MARGIN_UNITS` of `TURN_MIN_BYTES` bytes of the model's recorded text) the recording stays the
input: there the rollout's timing differs from the recording's by a unit or two and the recording's
next unit is no label for the rollout's state (it would teach the model to restart its words). So the
model sees its own listening — silent, a backchannel, or a reply it started in a pause and talked on
over the user — and learns, from the recording's next units, to stop and to read the user's speech
under its own voice as what it is. Targets (and the depth head's inputs) stay the clean tokens.
Only the rows that may be fed are rolled out (`rollout_rows`: `ceil(p * rows)` per data shard): the
rollout costs about `p` of a forward pass per step (`flops.train_flops_per_token`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from wan_streamer_jax import schedule
from wan_streamer_jax.config import Config, TextConfig
from wan_streamer_jax.streaming.sampling import SamplingConfig, draw_out_groups, split_keys
from wan_streamer_jax.train.own_samples import units_fed

TURN_MIN_BYTES = 8  # a backchannel ("mhm.", "I see.") has at most 7 text bytes, a turn's reply >= 4 words
TURN_MARGIN_UNITS = 4  # units on each side of a turn's bytes that stay recorded (0.64 s)


def recorded_turn_units(layout: schedule.UnitLayout, tokens, margin: int = TURN_MARGIN_UNITS,
                        min_bytes: int = TURN_MIN_BYTES):
  """bool `[batch, units]`: units whose `[t - margin, t + margin]` neighbourhood holds >= `min_bytes`
  bytes of the model's recorded text (`text_out` tokens < 256) — the recording's own turns.

  `tokens`: int32 `[batch, units * L]` (clean).
  """
  L = layout.tokens_per_unit
  b, s = tokens.shape
  text = jnp.asarray(tokens).reshape(b, s // L, L)[:, :, layout.group_slices["text_out"]]
  count = jnp.sum(text < TextConfig.PAD, axis=-1).astype(jnp.int32)  # bytes per unit
  padded = jnp.pad(count, ((0, 0), (margin + 1, margin)))
  csum = jnp.cumsum(padded, axis=1)
  near = csum[:, 2 * margin + 1:] - csum[:, :-2 * margin - 1]  # sum over the 2 * margin + 1 units
  return near >= min_bytes


def rollout(cfg: Config, model, tokens, segment_ids, unit_ids, use_own, keys,
            sampling: SamplingConfig = SamplingConfig()):
  """Streams `model` over the window unit by unit, feeding its own draws back where `use_own`.

  Args:
    tokens, segment_ids, unit_ids: int32 `[batch, units * L]`, a train batch (clean tokens).
    use_own: bool `[batch, units]`: unit `t`'s out slots are the rollout's draw of them (made at unit
      `t - 1`) instead of the recording's. Ignored where unit `t - 1` is not unit `t`'s predecessor
      (unit 0 of a segment, the first unit after the sinks' gap, padding): nothing drew those.
    keys: uint32 `[batch, 2]` one sampling key per row.
  Returns:
    int32 `[batch, units * L]`: the tokens the rollout read — `tokens` with the own units' out slots
    replaced. Running the teacher-forced model on them gives the rollout's logits (up to float error).
  """
  layout = schedule.unit_layout(cfg)
  L = layout.tokens_per_unit
  b, s = tokens.shape
  u = s // L
  take = units_fed(layout, tokens, segment_ids, unit_ids, use_own)
  groups = [g for g in schedule.OUT_GROUPS if layout.group_size(g)]
  m = cfg.model
  cache = model.init_cache(b, None if m.window_units is not None else max(u, m.sink_units + 1))
  by_unit = lambda x: jnp.swapaxes(x.reshape(b, u, L), 0, 1)  # noqa: E731  [units, batch, L]

  graphdef, params = nnx.split(model)  # carried, merged inside: NNX refuses Variables of an outer trace

  def body(carry, xs):
    params, cache, prev, keys = carry
    model = nnx.merge(graphdef, params)
    unit, seg, ids, own = xs
    for g in groups:
      sl = layout.group_slices[g]
      unit = unit.at[:, sl].set(jnp.where(own[:, None], prev[g], unit[:, sl]))
    logits, cache, hidden = model(unit, seg, ids, cache=cache, return_hidden=True, groups=schedule.OUT_GROUPS)
    keys, drawn = split_keys(keys, len(schedule.OUT_GROUPS))
    drawn, _ = draw_out_groups(model, layout, logits, hidden, dict(zip(schedule.OUT_GROUPS, drawn)), sampling,
                               groups=schedule.OUT_GROUPS)
    return (params, cache, {g: drawn[g] for g in groups}, keys), unit

  prev = {g: jnp.zeros((b, layout.group_size(g)), jnp.int32) for g in groups}
  _, read = lax.scan(body, (params, cache, prev, keys),
                     (by_unit(tokens), by_unit(segment_ids), by_unit(unit_ids), jnp.swapaxes(take, 0, 1)))
  return jnp.swapaxes(read, 0, 1).reshape(b, s)


def rollout_rows(p: float, batch: int, shards: int = 1) -> int:
  """Rows rolled out per step under `train.own_history = p`: `ceil(p * batch / shards)` in each of the
  batch's `shards` (its data-parallel shards), so the rollout stays shard-local and costs `p` of a
  forward where `p * batch / shards` is whole (a quarter of a 4-row batch: 1 row, 0.19 s of 0.70 s on the
  demo config, CPU)."""
  if p <= 0:
    return 0
  if batch % shards:
    raise ValueError(f"train.batch_size ({batch}) must divide into the batch's {shards} shards")
  return -(-round(p * batch * 1e6) // (shards * 10**6))  # ceil, robust to p * batch = 0.9999999


def with_own_history(cfg: Config, model, batch: dict, key, shards: int = 1) -> tuple[dict, dict]:
  """The batch a train step learns from under `train.own_history = p > 0`, and its metrics.

  Call outside the differentiated function. In each of the batch's `shards` (consecutive row blocks:
  its data-parallel shards, so gathering rows stays local) `k = rollout_rows(p, ...)` rows are drawn
  without replacement and rolled out, and each is fed its rollout with probability `p * rows / k` (1
  when `p * rows` is whole) — every row is chosen with probability `p`, and the rollout costs `k` rows,
  not all. In a chosen row every unit outside `recorded_turn_units` reads the rollout's own out slots.
  Returns the batch with `tokens` mixed and `target_tokens` clean (the batch's own, or a copy of its
  clean `tokens`), and `own_history/units` (share of the batch's units chosen for own slots; a
  segment's first unit counts though it keeps its recorded slots, nothing drew them),
  `own_history/talk` (share of those whose `text_out` holds a byte: the model talking where the
  recording listened) and `own_history/changed` (share of those whose slots differ from the recording's).
  """
  layout = schedule.unit_layout(cfg)
  L = layout.tokens_per_unit
  tokens = batch["tokens"]
  clean = batch.get("target_tokens", tokens)
  b, s = tokens.shape
  u = s // L
  p = cfg.train.own_history
  per = b // shards
  k = rollout_rows(p, b, shards)
  k_rows, k_use, k_draw = jax.random.split(key, 3)
  # k distinct rows per shard: the first k of a random order of the shard's rows
  order = jnp.argsort(jax.random.uniform(k_rows, (shards, per)), axis=1)[:, :k]  # [shards, k]

  def pick(full):  # the chosen rows, shard by shard: [shards * k, ...]
    return jnp.take_along_axis(full.reshape(shards, per, -1), order[:, :, None], axis=1).reshape(shards * k, -1)

  used = jax.random.bernoulli(k_use, min(1.0, p * per / k), (shards * k,))
  sub = {name: pick(batch[name]) for name in ("tokens", "segment_ids", "unit_ids")}
  sub_own = used[:, None] & ~recorded_turn_units(layout, sub["tokens"])
  keys = jax.random.key_data(jax.random.split(k_draw, shards * k))
  read = rollout(cfg, model, sub["tokens"], sub["segment_ids"], sub["unit_ids"], sub_own, keys)

  def scatter(full, part):  # part's rows back into full, shard by shard
    part = part.reshape(shards, k, -1)
    index = jnp.broadcast_to(order[:, :, None], part.shape)
    return jnp.put_along_axis(full.reshape(shards, per, -1), index, part, axis=1, inplace=False)

  mixed = scatter(tokens, read).reshape(b, s)
  use_own = scatter(jnp.zeros((b, u), bool), sub_own).reshape(b, u)
  changed = jnp.any(mixed.reshape(b, u, L) != tokens.reshape(b, u, L), axis=-1)
  own = use_own & (batch["segment_ids"].reshape(b, u, L)[:, :, 0] != 0)
  talk = jnp.any(mixed.reshape(b, u, L)[:, :, layout.group_slices["text_out"]] < TextConfig.PAD, axis=-1)
  n_own = jnp.maximum(jnp.sum(own), 1)
  metrics = {"own_history/units": jnp.mean(own.astype(jnp.float32)),
             "own_history/talk": jnp.sum(own & talk) / n_own,
             "own_history/changed": jnp.sum(own & changed) / n_own}
  return {**batch, "tokens": mixed, "target_tokens": clean}, metrics
