"""Training windows that match streaming: the conversation's first units as sinks, absolute unit ids,
no next-unit target across the jump from the sinks to the window, the whole attention span covered."""

import jax.numpy as jnp
import numpy as np

from data_pipelines import pipelines
from data_pipelines.packing import TokenWindow, window_tokens
from data_pipelines.token_data import RandomTokenSource, random_token_example
from wan_streamer_jax import schedule
from wan_streamer_jax.config import Config, load_config

CFG = Config().replace(model={"window_units": 6, "sink_units": 2})
LAYOUT = schedule.unit_layout(CFG)
L = LAYOUT.tokens_per_unit


def test_long_conversation_window_keeps_its_first_units_as_sinks():
  ex = random_token_example(CFG, 30, np.random.default_rng(0), camera_off_prob=0.0)
  win = TokenWindow(LAYOUT, max_units=8, sink_units=2)
  starts = set()
  for seed in range(20):
    out = win.random_map(ex, np.random.default_rng(seed))
    ids = out["unit_ids"].reshape(8, L)
    assert (ids == ids[:, :1]).all()  # constant over each unit
    units = ids[:, 0]
    start = int(units[2])
    starts.add(start)
    np.testing.assert_array_equal(units, np.r_[0, 1, np.arange(start, start + 6)])
    assert 2 <= start <= 30 - 6
    np.testing.assert_array_equal(out["tokens"][:2 * L], window_tokens(LAYOUT, ex, 0, 2))
    np.testing.assert_array_equal(out["tokens"][2 * L:], window_tokens(LAYOUT, ex, start, 6))
  assert len(starts) > 3  # the window moves, the sinks do not


def test_short_conversation_is_taken_whole_from_its_start():
  ex = random_token_example(CFG, 5, np.random.default_rng(1))
  out = TokenWindow(LAYOUT, max_units=8, sink_units=2).random_map(ex, np.random.default_rng(0))
  np.testing.assert_array_equal(out["unit_ids"], np.repeat(np.arange(5), L))
  np.testing.assert_array_equal(out["tokens"], window_tokens(LAYOUT, ex, 0, 5))


def test_no_target_across_the_jump_from_sinks_to_window():
  tokens = jnp.arange(4 * 3, dtype=jnp.int32)[None]  # 4 units of L=3
  seg = jnp.ones_like(tokens)
  ids = jnp.repeat(jnp.array([0, 7, 8, 9], jnp.int32), 3)[None]
  _, valid = schedule.next_unit_targets(tokens, seg, 3, ids)
  np.testing.assert_array_equal(np.asarray(valid[0]).reshape(4, 3)[:, 0], [False, True, True, False])
  _, plain = schedule.next_unit_targets(tokens, seg, 3)
  np.testing.assert_array_equal(np.asarray(plain[0]).reshape(4, 3)[:, 0], [True, True, True, False])


def test_token_pipeline_batches_carry_absolute_unit_ids_with_sinks_at_zero():
  source = RandomTokenSource(CFG, 16, min_units=20, max_units=40, seed=3)
  batch = next(iter(pipelines.token_pipeline(source, CFG, batch_size=2, seq_units=8, seed=0,
                                             process_index=0, process_count=1)))
  for row in range(2):
    units = batch["unit_ids"][row].reshape(8, L)[:, 0]
    assert units[0] == 0 and units[1] == 1 and units[2] >= 2  # the conversation's first 2 units, then later ones
    assert (np.diff(units[2:]) == 1).all()


def test_demo_configs_train_on_the_whole_streaming_span():
  for name in ("demo", "demo_tiny"):
    cfg = load_config(name)
    assert cfg.train.units_per_example >= cfg.model.sink_units + cfg.model.window_units, name
    assert cfg.model.sink_units >= 1
