"""Recorded conversations through the streaming step with `jax.lax.scan` (one compiled loop).

    state, outs = run_stream(engine, engine.params, state, inputs_seq)           # model free-running
    state, outs = run_teacher_forced(engine, engine.params, state, inputs_seq, recorded_out)

`inputs_seq` is the step's inputs dict with a leading `[units]` axis; outputs
come back with the same leading axis. Teacher forcing feeds the model's own
streams from a recording (what the training forward sees: unit t's out slots
hold the recorded tokens of unit t - 1); the outputs' `next_tokens` (and
`logits`) are then the model's predictions of each recorded unit, and the
decoded voice/frames are the recording's (the codec decoders follow the out
stream that is actually played).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from wan_streamer_jax import schedule
from wan_streamer_jax.streaming.engine import StreamingEngine


@functools.lru_cache(maxsize=16)
def _scan(engine: StreamingEngine, with_logits: bool):
  def run(params, state, inputs_seq, active_seq, reset_seq, forced_seq):
    def body(state, xs):
      inputs, active, reset, forced = xs
      return engine.step_fn(params, state, inputs, active, reset, forced, with_logits=with_logits)
    return jax.lax.scan(body, state, (inputs_seq, active_seq, reset_seq, forced_seq))
  return jax.jit(run, donate_argnums=(1,))


def _masks(engine, inputs_seq, active_seq, reset_seq):
  units = np.shape(inputs_seq.get("audio"))[0] if isinstance(inputs_seq, dict) and "audio" in inputs_seq else 0
  S = engine.num_slots
  active_seq = np.ones((units, S), bool) if active_seq is None else np.asarray(active_seq)
  reset_seq = np.zeros((units, S), bool) if reset_seq is None else np.asarray(reset_seq)
  engine.check_inputs(inputs_seq, active_seq, reset_seq, lead=(units,))
  return active_seq, reset_seq, units


def run_stream(engine: StreamingEngine, params: dict, state, inputs_seq: dict, active_seq=None,
               reset_seq=None):
  """`jax.lax.scan` of `engine.step_fn` over units: `(state, outputs_seq)` (the state is donated).

  `active_seq`/`reset_seq`: bool `[units, S]` (default: every slot active, no reset).
  """
  active_seq, reset_seq, _ = _masks(engine, inputs_seq, active_seq, reset_seq)
  engine.check_state(state)
  return _scan(engine, False)(params, state, inputs_seq, active_seq, reset_seq, None)


def run_teacher_forced(engine: StreamingEngine, params: dict, state, inputs_seq: dict, recorded_out: dict,
                       active_seq=None, reset_seq=None, with_logits: bool = False):
  """`run_stream` with the model's out streams fed from a recording.

  Args:
    recorded_out: out group (`video_out`, `audio_out`, `text_out`) -> int32 `[units, S, group_size]`,
      the model's recorded tokens *of* each unit (unshifted; the step shifts them by feeding
      unit t's tokens into unit t + 1's out slots).
    with_logits: also return the model's `logits` (kind -> `[units, S, n_kind, V]`).
  """
  active_seq, reset_seq, units = _masks(engine, inputs_seq, active_seq, reset_seq)
  engine.check_state(state)
  lay, S = engine.layout, engine.num_slots
  if not isinstance(recorded_out, dict) or set(recorded_out) != set(schedule.OUT_GROUPS):
    raise ValueError(f"recorded_out: expected a dict with keys {schedule.OUT_GROUPS}, received "
                     f"{sorted(recorded_out) if isinstance(recorded_out, dict) else type(recorded_out).__name__}")
  parts = []
  for g in schedule.OUT_GROUPS:
    x = np.asarray(recorded_out[g])
    want = (units, S, lay.group_size(g))
    if x.shape != want or not np.issubdtype(x.dtype, np.integer):
      raise ValueError(f"recorded_out[{g!r}]: expected int32 {want} [units, slots, {g} slots], received "
                       f"{x.dtype} {x.shape}")
    vocab = lay.vocab_sizes[g.split("_")[0]]
    if x.size and (x.min() < 0 or x.max() >= vocab):
      raise ValueError(f"recorded_out[{g!r}]: expected ids in [0, {vocab}), received [{x.min()}, {x.max()}]")
    parts.append(x.astype(np.int32))
  forced = np.concatenate(parts, axis=-1)
  return _scan(engine, with_logits)(params, state, inputs_seq, active_seq, reset_seq, forced)
