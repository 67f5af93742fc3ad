"""train.own_stream_swap: the model's own voice / face inputs of some training units are another unit's,
the targets (and the depth head's teacher forcing) stay clean."""

import numpy as np
import pytest

from data_pipelines.packing import TokenWindow
from data_pipelines.token_data import random_token_example
from tests.helpers import tiny_config
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, ConfigError
from wan_streamer_jax.train.feed import batch_keys

CFG = tiny_config()
LAYOUT = schedule.unit_layout(CFG)
L = LAYOUT.tokens_per_unit
OWN = np.isin(LAYOUT.group, [GROUPS.index("audio_out"), GROUPS.index("video_out")])


def _windows(own_swap, seed=0):
  ex = random_token_example(CFG, 24, np.random.default_rng(1))
  win = TokenWindow(LAYOUT, max_units=12, sink_units=1, targets=True, own_swap=own_swap)
  return win.random_map(ex, np.random.default_rng(seed))


def test_only_the_own_voice_and_face_inputs_change_and_the_targets_stay_clean():
  clean, swapped = _windows(0.0), _windows(0.6)
  np.testing.assert_array_equal(swapped["target_tokens"], clean["tokens"])  # the same window, clean targets
  np.testing.assert_array_equal(clean["target_tokens"], clean["tokens"])
  a, b = clean["tokens"].reshape(-1, L), swapped["tokens"].reshape(-1, L)
  np.testing.assert_array_equal(a[:, ~OWN], b[:, ~OWN])  # user streams and the model's text untouched
  changed = np.flatnonzero((a[:, OWN] != b[:, OWN]).any(-1))
  assert 2 <= len(changed) < len(a)  # p = 0.6 of 12 units (a unit may draw itself)
  for u in changed:  # each swapped unit carries some unit's own streams of the same window
    assert any(np.array_equal(b[u, OWN], a[v, OWN]) for v in range(len(a)))


def test_off_by_default_and_no_targets_without_need():
  out = TokenWindow(LAYOUT, max_units=12, sink_units=1).random_map(
      random_token_example(CFG, 24, np.random.default_rng(1)), np.random.default_rng(0))
  assert "target_tokens" not in out
  assert batch_keys(CFG) == ("tokens", "segment_ids", "unit_ids")
  swapping = tiny_config(train={"own_stream_swap": 0.2})
  assert swapping.separate_targets and batch_keys(swapping)[-1] == "target_tokens"


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_a_bad_probability_is_refused_by_name(bad):
  with pytest.raises(ConfigError, match=r"train\.own_stream_swap.*\[0, 1\)"):
    tiny_config(train={"own_stream_swap": bad})


def test_the_depth_head_is_teacher_forced_from_depth_tokens():
  from flax import nnx
  from wan_streamer_jax.model.transformer import create_model
  cfg = tiny_config(**{"model.attention_impl": "xla", "model.depth_layers": 1})
  model = create_model(cfg, seed=0)
  lay = schedule.unit_layout(cfg)
  rng = np.random.default_rng(3)
  vocab = lay.tile(6).vocab
  clean = (rng.random((1, lay.tile(6).seq_len)) * vocab).astype(np.int32)
  noisy = clean.reshape(6, -1).copy()
  audio_out = lay.group == GROUPS.index("audio_out")
  noisy[:, audio_out] = noisy[::-1][:, audio_out]  # the units' own voice in reverse order
  noisy = noisy.reshape(1, -1)
  fwd = nnx.jit(lambda m, t, d: m(t, depth_tokens=d))
  plain = nnx.jit(lambda m, t: m(t))
  with_clean, without = fwd(model, noisy, clean)["audio"], plain(model, noisy)["audio"]
  assert not np.allclose(with_clean, without)  # the depth logits read depth_tokens, not the inputs
  np.testing.assert_allclose(fwd(model, clean, clean)["audio"], plain(model, clean)["audio"], rtol=1e-5, atol=1e-5)
