"""Grain pipelines: unit-token windows and packing, raw windows, exact resume, per-process sharding."""

import numpy as np
import pytest

from data_pipelines import pipelines
from data_pipelines.packing import window_tokens
from data_pipelines.token_data import RandomTokenSource, random_token_example
from wan_streamer_jax import schedule
from wan_streamer_jax.config import Config, FRAMES_PER_UNIT

CFG = Config()
LAYOUT = schedule.unit_layout(CFG)
L = LAYOUT.tokens_per_unit
SPU = CFG.audio.samples_per_unit


def _unit(tokens, u, group):
  return tokens[u * L:(u + 1) * L][LAYOUT.group_slices[group]]


@pytest.mark.parametrize("start,n", [(0, 3), (2, 3), (1, 4)])
def test_window_tokens_follow_the_unit_layout(start, n):
  ex = random_token_example(CFG, 5, np.random.default_rng(3), camera_off_prob=0.0)
  ex["video_in_present"][3] = False
  tokens = window_tokens(LAYOUT, ex, start, n)
  assert tokens.dtype == np.int32 and tokens.shape == (n * L,)
  for j in range(n):
    t = start + j
    vin = ex["video_in"][t] if ex["video_in_present"][t] else np.full(CFG.video.tokens_per_unit,
                                                                       CFG.video.missing_id)
    np.testing.assert_array_equal(_unit(tokens, j, "video_in"), vin)
    np.testing.assert_array_equal(_unit(tokens, j, "audio_in"), ex["audio_in"][4 * t:4 * t + 4].reshape(-1))
    np.testing.assert_array_equal(_unit(tokens, j, "text_in"), ex["text_in"][t])
    for g, prev in (("video_out", ex["video_out"][t - 1]), ("audio_out", ex["audio_out"][4 * t - 4:4 * t].reshape(-1)),
                    ("text_out", ex["text_out"][t - 1])):
      want = LAYOUT.missing_id[LAYOUT.group_slices[g]] if t == 0 else prev  # out streams: unit t-1
      np.testing.assert_array_equal(_unit(tokens, j, g), want)


def _check_packed_batch(batch, batch_size, seq_units):
  S = seq_units * L
  assert set(batch) == {"tokens", "segment_ids", "unit_ids"}
  for k in batch:
    assert batch[k].dtype == np.int32 and batch[k].shape == (batch_size, S), k
  seg = batch["segment_ids"].reshape(batch_size, seq_units, L)
  uid = batch["unit_ids"].reshape(batch_size, seq_units, L)
  assert (seg == seg[..., :1]).all() and (uid == uid[..., :1]).all()  # whole units
  n_segments = []
  for b in range(batch_size):
    s, u = seg[b, :, 0], uid[b, :, 0]
    valid = s > 0
    assert not (valid[1:] & ~valid[:-1]).any()  # padding only at the end
    ids = s[valid]
    assert (np.diff(ids) >= 0).all() and ids[0] == 1
    for k in np.unique(ids):
      np.testing.assert_array_equal(u[s == k], np.arange((s == k).sum()))  # restart at 0 per segment
    n_segments.append(len(np.unique(ids)))
    tok = batch["tokens"][b][np.repeat(valid, L)].reshape(-1, L)
    vocab = np.array([LAYOUT.vocab_sizes[k] for k in ("video", "audio", "text")])[LAYOUT.kind]
    assert ((tok >= 0) & (tok < vocab)).all()
  return n_segments


def test_token_pipeline_packs_conversations():
  source = RandomTokenSource(CFG, 40, min_units=2, max_units=12, seed=1)
  ds = pipelines.token_pipeline(source, CFG, batch_size=3, seq_units=8, seed=0, process_index=0, process_count=1)
  it = iter(ds)
  counts = []
  for _ in range(6):
    counts += _check_packed_batch(next(it), 3, 8)
  assert max(counts) >= 2  # several conversations per sequence
  # With default sizes from the config.
  b = next(iter(pipelines.token_pipeline(source, CFG, process_index=0, process_count=1)))
  assert b["tokens"].shape == (CFG.train.batch_size, CFG.train.units_per_example * L)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_token_pipeline_state_resumes_exactly():
  source = RandomTokenSource(CFG, 30, min_units=2, max_units=20, seed=2)
  make = lambda: pipelines.token_pipeline(source, CFG, batch_size=2, seq_units=8, seed=7,  # noqa: E731
                                          process_index=0, process_count=1)
  it = iter(make())
  _take(it, 4)
  state = it.get_state()
  want = _take(it, 5)
  fresh = iter(make())  # e.g. after a restart
  fresh.set_state(state)
  _assert_same(_take(fresh, 5), want)


def _fake_raw_source(n, spu=SPU, hw=(16, 16)):
  """Conversations whose audio and video samples both encode their unit index (to check alignment)."""
  out = []
  for i in range(n):
    u = 3 + (i * 5) % 11
    unit_of_sample = (np.arange(u * spu) // spu).astype(np.float32)
    unit_of_frame = (np.arange(u * FRAMES_PER_UNIT) // FRAMES_PER_UNIT).astype(np.uint8)
    video = np.broadcast_to(unit_of_frame[:, None, None, None], (u * FRAMES_PER_UNIT, *hw, 3)).copy()
    out.append({"user_audio": unit_of_sample / 100, "model_audio": unit_of_sample / 100 + 0.5,
                "user_video": video, "model_video": video + 100, "user_camera_on": np.arange(u) % 4 != 3,
                "num_units": np.int32(u)})
  return out


def test_raw_pipeline_windows_align_audio_and_video():
  source = _fake_raw_source(9)
  ds = pipelines.raw_pipeline(source, CFG, units=6, batch_size=4, seed=0, process_index=0, process_count=1)
  it = iter(ds)
  for _ in range(5):
    b = next(it)
    assert b["audio"].shape == (4, 6 * SPU) and b["audio"].dtype == np.float32
    assert b["video"].shape == (4, 24, 16, 16, 3) and b["video"].dtype == np.uint8
    assert b["unit_mask"].shape == (4, 6)
    for k in range(4):
      n = int(b["unit_mask"][k].sum())
      assert n == min(6, int(source[b["index"][k]]["num_units"]))
      a_units = b["audio"][k, ::SPU][:n] * 100 - 50 * b["audio_role"][k]
      v_units = b["video"][k, ::FRAMES_PER_UNIT, 0, 0, 0][:n].astype(int) - 100 * b["video_role"][k]
      np.testing.assert_allclose(a_units, v_units, atol=1e-3)  # same window in both streams
      np.testing.assert_allclose(np.diff(a_units), 1, atol=1e-3)
      assert not b["audio"][k, n * SPU:].any() and not b["video"][k, n * 4:].any()
      camera = source[b["index"][k]]["user_camera_on"]
      start = int(round(a_units[0]))
      want = camera[start:start + n] if b["video_role"][k] == 0 else np.ones(n, bool)
      np.testing.assert_array_equal(b["video_mask"][k, :n], want)
      assert not b["video_mask"][k, n:].any()


def test_raw_pipeline_state_resumes_exactly():
  source = _fake_raw_source(7)
  make = lambda: pipelines.raw_pipeline(source, CFG, units=4, batch_size=2, seed=3,  # noqa: E731
                                        process_index=0, process_count=1)
  it = iter(make())
  _take(it, 3)
  state = it.get_state()
  want = _take(it, 6)  # crosses an epoch boundary (7 examples, 2 per batch)
  fresh = iter(make())
  fresh.set_state(state)
  _assert_same(_take(fresh, 6), want)


@pytest.mark.parametrize("count", [1, 3, 4])
def test_per_process_sharding_covers_every_example_once(count):
  source = _fake_raw_source(10)
  seen = []
  for pi in range(count):
    ds = pipelines.raw_pipeline(source, CFG, units=2, batch_size=1, seed=5, num_epochs=1, process_index=pi,
                                process_count=count, drop_remainder=False)
    mine = [int(b["index"][0]) for b in ds]
    assert len(set(mine)) == len(mine)
    seen += mine
  assert sorted(seen) == list(range(10))


def test_epochs_reshuffle_and_repeat_everything():
  ds = pipelines.sharded_examples(list(range(6)), seed=0, num_epochs=2, process_index=0, process_count=1)
  got = [ds[i] for i in range(len(ds))]
  assert sorted(got[:6]) == sorted(got[6:]) == list(range(6))
  assert got[:6] != got[6:]


@pytest.mark.slow
def test_token_pipeline_with_worker_processes_resumes():
  source = RandomTokenSource(CFG, 30, min_units=2, max_units=16, seed=4)
  make = lambda: pipelines.token_pipeline(source, CFG, batch_size=2, seq_units=8, seed=1,  # noqa: E731
                                          process_index=0, process_count=1, worker_count=2)
  it = iter(make())
  try:
    _take(it, 3)
    state = it.get_state()
    want = _take(it, 3)
  finally:
    it.close()
  fresh = iter(make())
  try:
    fresh.set_state(state)
    _assert_same(_take(fresh, 3), want)
    _check_packed_batch(want[0], 2, 8)
  finally:
    fresh.close()


def test_token_example_round_trips_through_the_record_format():
  from data_pipelines.token_data import check_example, decode_record, encode_record
  ex = RandomTokenSource(CFG, 3, min_units=3, max_units=5)[1]
  back = decode_record(encode_record(ex))
  check_example(CFG, back)
  assert set(back) == set(ex)
  for k in ex:
    np.testing.assert_array_equal(back[k], ex[k])
  tokens = window_tokens(LAYOUT, back, 0, int(back["num_units"]))
  np.testing.assert_array_equal(tokens, window_tokens(LAYOUT, ex, 0, int(ex["num_units"])))
