"""The streaming engine: train == stream through the codecs, independent slots, frozen inactive slots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.streaming_fixtures import engine, random_inputs, unit
from wan_streamer_jax import schedule
from wan_streamer_jax.codecs.training import create_codec
from wan_streamer_jax.model.transformer import create_model
from wan_streamer_jax.streaming import run_teacher_forced

OUT_KEYS = ("audio", "video", "text", "turn_state", "unit", "tokens", "next_tokens")
EXACT = ("tokens", "next_tokens", "text", "turn_state", "unit")  # every token the model saw and drew


@pytest.mark.parametrize("depth_layers,overrides", [(0, {}), (2, {}), (2, {"model.code_digit_embed": True})],
                         ids=["parallel_heads", "depth_head", "depth_head_code_digits"])
def test_teacher_forced_stream_reproduces_the_training_forward(depth_layers, overrides):
  eng = engine(1, depth_layers=depth_layers, **overrides)
  lay, L, units = eng.layout, eng.layout.tokens_per_unit, 12  # the ring (5 units) wraps twice
  inputs = random_inputs(eng, units, seed=3)
  rng = np.random.default_rng(4)
  recorded = {g: rng.integers(0, lay.vocab_sizes[g.split("_")[0]] - 1, (units, 1, lay.group_size(g))).astype(np.int32)
              for g in schedule.OUT_GROUPS}
  reset = np.zeros((units, 1), bool)
  reset[0] = True
  state, outs = run_teacher_forced(eng, eng.params, eng.init_state(0), inputs, recorded, reset_seq=reset,
                                   with_logits=True)
  tokens = np.asarray(outs["tokens"])[:, 0]  # [units, L]: what the model was fed
  groups = schedule.split_units(lay, tokens.reshape(1, -1))
  # out slots: the recording shifted by one unit (what the training pipeline builds)
  for g in schedule.OUT_GROUPS:
    np.testing.assert_array_equal(groups[g][0], schedule.shift_out_stream(recorded[g][:, 0], lay.missing(g)))
  # in slots: the offline codec's codes of the whole clip (streaming codec == offline codec)
  cfg = eng.cfg
  audio_codes = create_codec(cfg, "audio", seed=1).encode(inputs["audio"][:, 0].reshape(1, -1))
  np.testing.assert_array_equal(schedule.slots_to_codes(lay, "audio_in", groups["audio_in"]), audio_codes)
  video_codes = create_codec(cfg, "video", seed=2).encode(inputs["video"][:, 0].reshape(1, -1, *inputs["video"].shape[3:]))
  video_in = np.where(inputs["camera_on"][:, 0, None], schedule.codes_to_slots(lay, "video_in", np.asarray(video_codes))[0],
                      lay.missing("video_in"))
  np.testing.assert_array_equal(groups["video_in"][0], video_in)
  np.testing.assert_array_equal(groups["text_in"][0], inputs["text"][:, 0])
  # the logits of every unit: the training forward (same window and sinks) over the fed tokens
  model = create_model(cfg, seed=0)
  graphdef, params = nnx.split(model)
  # plus one unit holding the last unit's recorded out tokens: a depth head is fed each unit's next unit
  after = schedule.assemble_units(lay, {g: recorded[g][-1:, 0] for g in schedule.OUT_GROUPS})
  fed = np.concatenate([tokens.reshape(-1), after]).reshape(1, -1)
  full = jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))(params, jnp.asarray(fed))
  for kind, lg in outs["logits"].items():
    n = lg.shape[2]
    np.testing.assert_allclose(np.asarray(lg)[:, 0], np.asarray(full[kind][0]).reshape(units + 1, n, -1)[:units],
                               atol=1e-4, rtol=0, err_msg=kind)
  assert np.asarray(outs["unit"])[:, 0].tolist() == list(range(units))


def _run(eng, schedule_of_slot, sessions, steps):
  """Drives `eng` with `engine.step`; returns per session the list of its outputs at its active units.

  schedule_of_slot[s]: per step a (session id | None, reset, active) triple.
  """
  state = eng.init_state(seed=123)
  got = {sid: [] for sid in sessions}
  pos = {sid: 0 for sid in sessions}
  S = eng.num_slots
  for t in range(steps):
    x = {k: np.zeros_like(v[0][:1]).repeat(S, 0) for k, v in next(iter(sessions.values())).items()}
    active, reset = np.zeros(S, bool), np.zeros(S, bool)
    for s in range(S):
      sid, rst, act = schedule_of_slot[s][t]
      active[s], reset[s] = act, rst
      if sid is not None and act:
        for k in x:
          x[k][s] = sessions[sid][k][pos[sid]][0]
    before = jax.tree.map(np.array, state) if not active.all() else None
    state, out = eng.step(eng.params, state, x, active, reset)
    out = jax.device_get(out)
    if before is not None:  # an inactive slot's state is bit-identical, as if the step never ran
      for s in np.flatnonzero(~active):
        for a, b, path in zip(jax.tree.leaves(before), jax.tree.leaves(state),
                              jax.tree_util.tree_flatten_with_path(before)[0]):
          axis = 1 if a.ndim == 5 and a.shape[0] == eng.cfg.model.num_layers and a.shape[1] == S else 0
          np.testing.assert_array_equal(np.take(np.asarray(b), s, axis), np.take(a, s, axis),
                                        err_msg=jax.tree_util.keystr(path[0]))
    for s in range(S):
      sid, _, act = schedule_of_slot[s][t]
      if sid is not None and act:
        got[sid].append({k: out[k][s] for k in OUT_KEYS})
        pos[sid] += 1
  return got


@pytest.mark.parametrize("depth_layers", [0, 2], ids=["parallel_heads", "depth_head"])
def test_slots_are_independent_of_each_other_and_of_their_index(depth_layers):
  pool = engine(4, depth_layers=depth_layers)
  steps = 14
  # session id -> (slot, start unit, paused units); slots run a throw-away session before their reset
  plan = {"a": (0, 0, ()), "b": (1, 3, (6, 7)), "c": (2, 5, (5 + 2,)), "d": (3, 1, (2, 3, 4, 11))}
  sessions = {sid: random_inputs(pool, steps, seed=10 + i, slots=1) for i, sid in enumerate(plan)}
  junk = random_inputs(pool, steps, seed=99, slots=1)
  sessions_all = {**sessions, "junk": junk}
  sched = [[None] * steps for _ in range(4)]
  for sid, (slot, start, paused) in plan.items():
    for t in range(steps):
      if t < start:
        sched[slot][t] = ("junk", False, True)
      else:
        sched[slot][t] = (sid, t == start, t not in paused)
  for sid in plan:  # each session's reset takes the session's own seed
    sessions[sid]["seed"][:] = 1000 + ord(sid)
  in_pool = _run(pool, sched, sessions_all, steps)
  alone_engine = engine(1, depth_layers=depth_layers)
  for sid, (slot, start, paused) in plan.items():
    n = len(in_pool[sid])
    alone = _run(alone_engine, [[(sid, t == 0, True) for t in range(n)]], {sid: sessions[sid]}, n)[sid]
    for t, (a, b) in enumerate(zip(in_pool[sid], alone)):
      for k in EXACT:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"session {sid} unit {t} output {k}")
      # the codecs' convolutions round differently for batch 4 and batch 1 (XLA CPU, ~1e-10):
      # the same tokens decode to the same signal up to float rounding
      np.testing.assert_allclose(a["audio"], b["audio"], atol=1e-6, rtol=0, err_msg=f"{sid} unit {t} audio")
      assert np.abs(a["video"].astype(int) - b["video"].astype(int)).max() <= 1, f"{sid} unit {t} video"
    assert [o["unit"] for o in alone] == list(range(n))
  # sampled, not constant: the sessions differ from each other
  assert not np.array_equal(in_pool["a"][1]["next_tokens"], in_pool["b"][1]["next_tokens"])


@pytest.mark.parametrize("depth_layers", [0, 2], ids=["parallel_heads", "depth_head"])
def test_the_drawing_step_skips_the_in_groups_heads_and_draws_the_same(depth_layers):
  """Without `with_logits` the step computes no in-group head (fewer FLOPs), yet draws, decodes and
  carries exactly what the step that computes every head does."""
  eng = engine(2, depth_layers=depth_layers)
  inputs = random_inputs(eng, 6, seed=21)
  steps = {w: jax.jit(lambda p, s, x, a, r, w=w: eng.step_fn(p, s, x, a, r, with_logits=w)) for w in (False, True)}
  active, reset = np.ones(2, bool), np.ones(2, bool)
  lean_cost = steps[False].lower(eng.params, eng.init_state(5), unit(inputs, 0), active, reset).compile()
  full_cost = steps[True].lower(eng.params, eng.init_state(5), unit(inputs, 0), active, reset).compile()
  assert lean_cost.cost_analysis()["flops"] < full_cost.cost_analysis()["flops"]
  states = {w: eng.init_state(5) for w in (False, True)}
  for t in range(6):
    outs = {}
    for w in (False, True):
      states[w], outs[w] = steps[w](eng.params, states[w], unit(inputs, t), active, reset if t == 0 else ~reset)
    assert "logits" not in outs[False] and set(outs[True]["logits"]) == {"text", "audio", "video"}
    for k in OUT_KEYS:
      np.testing.assert_array_equal(np.asarray(outs[False][k]), np.asarray(outs[True][k]), err_msg=f"unit {t} {k}")
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(states[False]), jax.device_get(states[True]))
  assert len(np.unique(np.asarray(outs[False]["next_tokens"]))) > 1  # drawn, not constant
