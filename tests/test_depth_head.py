"""The depth head: slot-by-slot text_out / audio_out inside a unit, decode == teacher-forced forward."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import random_batch, tiny_config
from wan_streamer_jax.model.depth_head import DEPTH_GROUPS, depth_slots
from wan_streamer_jax.model.transformer import create_model

UNITS, T = 5, 2  # sequence length in units; the unit whose logits are probed


@pytest.fixture(scope="module")
def model():
  return create_model(tiny_config(**{"model.attention_impl": "xla", "model.depth_layers": 2}), seed=3)


@functools.lru_cache(maxsize=1)
def _jitted_forward(model):
  graphdef, params = nnx.split(model)
  fwd = jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))
  return functools.partial(fwd, params)


def _unit_logits(model, tokens, t):
  """kind -> float64 `[batch, n_kind, V]` logits of unit `t` of the teacher-forced forward."""
  out = _jitted_forward(model)(jnp.asarray(tokens))
  return {k: np.asarray(v, np.float64).reshape(v.shape[0], UNITS, -1, v.shape[-1])[:, t] for k, v in out.items()}


def _depth_part(logits, lay):
  """The depth positions' logits of one unit, in depth order: list of `[batch, V]`."""
  rows = []
  for g in DEPTH_GROUPS:
    kind = g.split("_")[0]
    n_in = lay.group_size(f"{kind}_in")
    rows += [logits[kind][:, n_in + i] for i in range(lay.group_size(g))]
  return rows


def test_a_depth_position_sees_the_next_units_earlier_depth_slots_only(model):
  lay = model.layout
  L = lay.tokens_per_unit
  tokens = np.asarray(random_batch(model.cfg, 2, UNITS, seed=1)["tokens"])
  base = _unit_logits(model, tokens, T)
  slots = depth_slots(lay)
  for k in (0, 3, len(slots) - 2):  # a text byte, the last text byte, an audio code
    tok = tokens.copy()
    tok[:, (T + 1) * L + slots[k]] = (tok[:, (T + 1) * L + slots[k]] + 1) % 5
    changed = _unit_logits(model, tok, T)
    before, after = _depth_part(base, lay), _depth_part(changed, lay)
    for j in range(k + 1):  # this and earlier depth positions: unchanged
      np.testing.assert_array_equal(after[j], before[j], err_msg=f"position {j} saw slot {k}")
    assert max(np.abs(after[j] - before[j]).max() for j in range(k + 1, len(slots))) > 1e-5
    # the parallel head's slots of unit T never see unit T + 1
    np.testing.assert_array_equal(changed["video"], base["video"])
    for kind in ("audio", "text"):
      n_in = lay.group_size(f"{kind}_in")
      np.testing.assert_array_equal(changed[kind][:, :n_in], base[kind][:, :n_in])


def test_greedy_depth_decode_draws_the_argmax_of_the_teacher_forced_logits(model):
  lay = model.layout
  L = lay.tokens_per_unit
  tokens = np.asarray(random_batch(model.cfg, 2, UNITS, seed=2)["tokens"])
  cache = model.init_cache(2, max_units=UNITS)
  for t in range(T + 1):
    ids = jnp.full((2, L), t, jnp.int32)
    logits, cache, hidden = model(jnp.asarray(tokens[:, t * L:(t + 1) * L]), jnp.ones((2, L), jnp.int32), ids,
                                  cache=cache, return_hidden=True)
  keys = {g: jnp.zeros((2, 2), jnp.uint32) for g in DEPTH_GROUPS}
  greedy = lambda lg, key, kind: jnp.argmax(lg, axis=-1).astype(jnp.int32)  # noqa: E731
  drawn, depth_logits = model.depth_decode(hidden, keys, greedy)
  # the training forward over the same units, the drawn tokens placed in unit T + 1's depth slots
  tok = tokens.copy()
  for g in DEPTH_GROUPS:
    sl = lay.group_slices[g]
    tok[:, (T + 1) * L + sl.start:(T + 1) * L + sl.stop] = np.asarray(drawn[g])
  forward = _unit_logits(model, tok, T)
  merged = model.merge_depth_logits(logits, depth_logits)
  for kind in ("audio", "text"):
    np.testing.assert_allclose(np.asarray(merged[kind])[:, :], forward[kind], atol=2e-5, rtol=0, err_msg=kind)
  for g in DEPTH_GROUPS:
    kind, n_in = g.split("_")[0], lay.group_size(f"{g.split('_')[0]}_in")
    np.testing.assert_array_equal(np.asarray(drawn[g]), forward[kind][:, n_in:].argmax(-1))
  # drawn one by one: the bytes of a unit are not all the same token
  assert len(np.unique(np.asarray(drawn["audio_out"]))) > 1


def test_depth_layers_must_be_a_non_negative_int():
  with pytest.raises(ValueError, match="model.depth_layers"):
    tiny_config(**{"model.depth_layers": -1})


def test_the_training_loss_reads_the_depth_logits(model):
  """One gradient step moves the depth head (its logits are the loss' for text_out / audio_out)."""
  from wan_streamer_jax.model.losses import next_unit_loss
  batch = random_batch(model.cfg, 2, UNITS, seed=4)
  graphdef, params = nnx.split(model)

  def loss_fn(p):
    m = nnx.merge(graphdef, p)
    return next_unit_loss(m.cfg, m(batch["tokens"], batch["segment_ids"], batch["unit_ids"]),
                          batch["tokens"], batch["segment_ids"], batch["unit_ids"])[0]

  grads = jax.jit(jax.grad(loss_fn))(params)
  g = jax.tree.leaves(nnx.state(nnx.merge(graphdef, grads).depth))
  assert all(np.isfinite(np.asarray(x)).all() for x in g)
  assert max(float(jnp.abs(x).max()) for x in g) > 0
