"""The unit layout owns every slot rule, identically in numpy and jnp."""

import jax.numpy as jnp
import numpy as np

from tests.helpers import tiny_config
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS


def test_assemble_split_and_codec_shapes_round_trip_in_numpy_and_jnp():
  cfg = tiny_config()
  lay = schedule.unit_layout(cfg)
  rng = np.random.default_rng(0)
  streams = {g: rng.integers(0, 50, (2, 3, lay.group_size(g))).astype(np.int32) for g in GROUPS}
  tokens = schedule.assemble_units(lay, streams)
  assert tokens.shape == (2, 3 * lay.tokens_per_unit) and isinstance(tokens, np.ndarray)
  as_jnp = schedule.assemble_units(lay, {g: jnp.asarray(v) for g, v in streams.items()})
  np.testing.assert_array_equal(np.asarray(as_jnp), tokens)
  back = schedule.split_units(lay, tokens)
  for g in GROUPS:
    np.testing.assert_array_equal(back[g], streams[g])
  # a missing group is MISSING
  partial = schedule.assemble_units(lay, {"audio_in": streams["audio_in"]})
  assert (schedule.split_units(lay, partial)["video_in"] == lay.missing("video_in")).all()
  # codec shapes: audio [units * 4, Q] frame-major level-minor, video [units, h, w] row-major
  codes = schedule.slots_to_codes(lay, "audio_in", streams["audio_in"])
  assert codes.shape == (2, 12, cfg.audio.num_quantizers)
  np.testing.assert_array_equal(codes[0, 1], streams["audio_in"][0, 0, cfg.audio.num_quantizers:2 * cfg.audio.num_quantizers])
  vcodes = schedule.slots_to_codes(lay, "video_out", jnp.asarray(streams["video_out"]))
  assert vcodes.shape == (2, 3, cfg.video.latent_h, cfg.video.latent_w)
  np.testing.assert_array_equal(vcodes[0, 0, 0, 1], streams["video_out"][0, 0, 1])
  for g in GROUPS:
    x = schedule.slots_to_codes(lay, g, streams[g])
    np.testing.assert_array_equal(schedule.codes_to_slots(lay, g, x), streams[g])


def test_positions_and_shift_are_one_rule_for_numpy_and_jnp():
  cfg = tiny_config()
  lay = schedule.unit_layout(cfg)
  tiled = lay.tile(3)
  units = (tiled.unit_index + 7)[None]
  pos_np = tiled.positions(units)
  pos_jnp = tiled.positions(jnp.asarray(units))
  np.testing.assert_array_equal(np.asarray(pos_jnp), pos_np)
  assert pos_np[0, 0, 0] == 7 * 4 and (pos_np[..., 0] // 4 == units).all()
  x = np.arange(12, dtype=np.int32).reshape(1, 3, 4)
  shifted = schedule.shift_out_stream(x, 99)
  np.testing.assert_array_equal(shifted, [[[99] * 4, [0, 1, 2, 3], [4, 5, 6, 7]]])
  np.testing.assert_array_equal(np.asarray(schedule.shift_out_stream(jnp.asarray(x), 99)), shifted)
  # the general shift: k units along any axis, more units than there are -> all fill
  np.testing.assert_array_equal(schedule.shift_units(x[0], 2, -1, axis=0), [[-1] * 4, [-1] * 4, [0, 1, 2, 3]])
  np.testing.assert_array_equal(schedule.shift_units(x, 1, 0, axis=-1)[0, 0], [0, 0, 1, 2])
  assert (schedule.shift_units(x, 5, 7, axis=1) == 7).all() and schedule.shift_units(x, 0, 7, axis=1) is x
  mask = lay.vocab_mask("text")
  assert mask.shape == (384,) and mask.sum() == cfg.text.vocab_size


def test_slice_in_kind_finds_each_group_among_its_kinds_slots():
  lay = schedule.unit_layout(tiny_config())
  slot_index = np.arange(lay.tokens_per_unit)[None]  # one unit: each slot holds its own index
  for g in GROUPS:
    kind_slots = lay.take_kind(slot_index, g.split("_")[0])[0]
    sl = lay.group_slices[g]
    np.testing.assert_array_equal(kind_slots[lay.slice_in_kind(g)], np.arange(sl.start, sl.stop))
