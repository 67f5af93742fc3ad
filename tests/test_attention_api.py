"""Entry-point checks: bad input -> ValueError naming the argument, before any kernel is traced;
the layout contract (contiguous segments, non-decreasing units) checked on concrete ids;
metadata, intervals and tile lists against the dense mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wan_streamer_jax.kernels import block_causal_attention, metadata, prepare_attention, testing, visible

B, T, H, KVH, D = 2, 16, 4, 2, 16


def _args(**over):
  unit = jnp.asarray(np.repeat(np.arange(4), 4)[None].repeat(B, 0), jnp.int32)
  args = dict(q=jnp.zeros((B, T, H, D)), k=jnp.zeros((B, T, KVH, D)), v=jnp.zeros((B, T, KVH, D)),
              q_unit=unit, kv_unit=unit, q_segment=None, kv_segment=None)
  args.update(over)
  return args


def _call(impl="xla", **over):
  a = _args(**over)
  return block_causal_attention(a.pop("q"), a.pop("k"), a.pop("v"), impl=impl, **a)


@pytest.mark.parametrize("over, name", [
    (dict(q=jnp.zeros((B, T, H))), "q"),
    (dict(k=jnp.zeros((B, T, KVH, D + 1))), "k"),
    (dict(v=jnp.zeros((B, T + 1, KVH, D))), "v"),
    (dict(k=jnp.zeros((B, T, 3, D)), v=jnp.zeros((B, T, 3, D))), "heads"),
    (dict(q_unit=jnp.zeros((B, T), jnp.int64 if jax.config.x64_enabled else jnp.int16)), "q_unit"),
    (dict(kv_unit=jnp.zeros((B, T), jnp.float32)), "kv_unit"),
    (dict(q_unit=jnp.zeros((B, T + 1), jnp.int32)), "q_unit"),
    (dict(q_segment=jnp.ones((B + 1, T), jnp.int32)), "q_segment"),
    (dict(kv_segment=jnp.ones((B, T), jnp.uint8)), "kv_segment"),
    (dict(window_units=0), "window_units"),
    (dict(sink_units=-1), "sink_units"),
    (dict(impl="flash"), "impl"),
    (dict(block_k=100, impl="pallas"), "block_k"),
    (dict(block_q=48, impl="pallas", pallas_target="gpu"), "block_q"),
    (dict(block_q=12), "block_q"),
    (dict(pallas_target="cuda", impl="pallas"), "pallas_target"),
    (dict(interpret="yes", impl="pallas"), "interpret"),
    (dict(q=jnp.zeros((B, T, H, 12)), k=jnp.zeros((B, T, KVH, 12)), v=jnp.zeros((B, T, KVH, 12)),
          impl="pallas", pallas_target="gpu"), "q"),
    (dict(q_unit=jnp.asarray([[0, 1, 2, 1] * 4] * B, jnp.int32)), "q_unit"),
    (dict(kv_unit=jnp.asarray([[0] * 8 + [1, 1, 0, 0, 2, 2, 3, 3]] * B, jnp.int32)), "kv_unit"),
    (dict(kv_segment=jnp.asarray([[1] * 4 + [0] * 4 + [1] * 8] * B, jnp.int32)), "kv_segment"),
    (dict(kv_segment=jnp.asarray([[2] * 8 + [1] * 8] * B, jnp.int32)), "kv_segment"),
])
def test_bad_input_names_the_argument(over, name):
  impl = over.pop("impl", "xla")
  with pytest.raises(ValueError, match=f"^{name}"):
    _call(impl=impl, **over)


def test_errors_come_before_tracing(monkeypatch):
  from wan_streamer_jax.kernels import xla
  monkeypatch.setattr(xla, "_forward", lambda *a: pytest.fail("traced"))
  with pytest.raises(ValueError, match="^kv_unit"):
    _call(kv_unit=jnp.asarray([[3, 2, 1, 0] * 4] * B, jnp.int32))


def test_metadata_mismatch_is_rejected():
  a = _args()
  meta = jax.jit(lambda u: prepare_attention(u, u, impl="xla", window_units=3))(a["q_unit"])
  with pytest.raises(ValueError, match="^metadata"):
    _call(metadata=meta)  # built for window_units=3, called without a window
  with pytest.raises(ValueError, match="^metadata"):
    _call(impl="pallas", metadata=meta)  # built for the xla tiles


def test_decreasing_units_accepted_under_jit_are_not_checked():
  """Traced ids cannot be checked (documented); the call still compiles."""
  out = jax.jit(lambda u: _call(q_unit=u, kv_unit=u))(jnp.asarray(_args()["q_unit"]))
  assert out.shape == (B, T, H, D)


@pytest.mark.parametrize("kind", testing.CASES)
def test_intervals_and_tile_lists_match_dense_mask(kind):
  case = testing.make_case(kind, seed=3, length=200, unit_sizes=(1, 2, 9, 40))
  ids = {n: jnp.asarray(case[n]) for n in testing.IDS}
  kw = dict(window_units=case["window_units"], sink_units=case["sink_units"])
  iv = np.asarray(jax.jit(lambda i: metadata.key_intervals(**i, **kw))(ids))
  pos = np.arange(case["kv_unit"].shape[1])
  inside = lambda lo, hi: (pos >= iv[..., lo, None]) & (pos < iv[..., hi, None])
  np.testing.assert_array_equal(inside(0, 1) | inside(2, 3), visible(**case_ids(case), **kw))

  meta = jax.jit(lambda i: prepare_attention(**i, **kw, impl="xla", block_q=16, block_k=24))(ids)
  visited, partial = testing.dense_tile_tables(**case_ids(case), block_q=16, block_k=24, **kw)
  fwd_v, fwd_p = _unpack(meta.fwd_tile, meta.fwd_mask, meta.fwd_num, visited.shape)
  bwd_v, bwd_p = _unpack(meta.bwd_tile, meta.bwd_mask, meta.bwd_num, visited.swapaxes(1, 2).shape)
  np.testing.assert_array_equal(fwd_v, visited)
  np.testing.assert_array_equal(fwd_p, partial)
  np.testing.assert_array_equal(bwd_v.swapaxes(1, 2), visited)
  np.testing.assert_array_equal(bwd_p.swapaxes(1, 2), partial)
  # steps past the end repeat the last visited tile (no new DMA on TPU)
  tile, num = np.asarray(meta.fwd_tile), np.asarray(meta.fwd_num)
  for b, i in zip(*np.nonzero(num)):
    assert (tile[b, i, num[b, i]:] == tile[b, i, num[b, i] - 1]).all()


def case_ids(case):
  return {n: case[n] for n in testing.IDS}


def _unpack(tile, mask, num, shape):
  tile, mask, num = map(np.asarray, (tile, mask, num))
  vis, part = np.zeros(shape, bool), np.zeros(shape, bool)
  for b in range(shape[0]):
    for r in range(shape[1]):
      for s in range(num[b, r]):
        vis[b, r, tile[b, r, s]] = True
        part[b, r, tile[b, r, s]] = bool(mask[b, r, s])
  return vis, part


def test_decode_matches_full_sequence_rows():
  """Decode (one unit vs the cache) == the same rows of the full-sequence call."""
  rng = np.random.default_rng(0)
  unit, seg = testing.uniform_layout(1, 96, 12)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 96, n, D)), jnp.float32) for n in (H, KVH, KVH))
  attend = jax.jit(block_causal_attention, static_argnames=("window_units", "sink_units"))
  full = attend(q, k, v, q_unit=unit, kv_unit=unit, window_units=3, sink_units=1)
  cache_unit = np.where(np.arange(128) < 96, np.pad(unit, ((0, 0), (0, 32))), 0).astype(np.int32)
  cache_seg = (np.arange(128) < 96).astype(np.int32)[None]
  pad = lambda x: jnp.pad(x, ((0, 0), (0, 32), (0, 0), (0, 0)))
  last = slice(84, 96)
  dec = attend(q[:, last], pad(k), pad(v), q_unit=unit[:, last], kv_unit=cache_unit,
                               q_segment=seg[:, last], kv_segment=cache_seg, window_units=3, sink_units=1)
  np.testing.assert_allclose(dec, full[:, last], atol=1e-6)


@pytest.mark.parametrize("impl, tiles", [("xla", dict(block_q=8, block_k=16)),
                                         ("pallas", dict(block_q=128, block_k=128))])
def test_ring_buffer_cache_under_jit_is_exact(impl, tiles):
  """A rotated (ring-buffer) cache breaks the layout contract; traced ids cannot be
  rejected, so those rows visit every tile with the exact mask and stay correct."""
  rng = np.random.default_rng(1)
  upt, slots = 8, 160  # 8 tokens per unit, a 20-unit ring holding units 10..29 rotated
  units = np.arange(10, 30).repeat(upt)
  kv_unit = np.stack([np.roll(units, 37), units])[:, :slots].astype(np.int32)  # row 1 keeps order
  kv_seg = np.ones_like(kv_unit)
  q_unit = np.full((2, upt), 29, np.int32)
  q_seg = np.ones_like(q_unit)
  q, k, v = (jnp.asarray(rng.normal(size=(2, n, h, D)), jnp.float32)
             for n, h in ((upt, H), (slots, KVH), (slots, KVH)))
  ids = dict(q_unit=q_unit, kv_unit=kv_unit, q_segment=q_seg, kv_segment=kv_seg)
  kw = dict(window_units=6, sink_units=0)
  with pytest.raises(ValueError, match="^kv_unit"):  # concrete ids: rejected up front
    prepare_attention(**ids, impl=impl, **kw)
  meta = jax.jit(lambda i: prepare_attention(**i, impl=impl, **kw, **tiles))(ids)
  assert int(meta.fwd_num[0].sum()) == meta.fwd_num.shape[1] * meta.fwd_tile.shape[2]  # all tiles
  visited, _ = testing.dense_tile_tables(**ids, block_q=meta.block_q, block_k=meta.block_k, **kw)
  assert int(meta.fwd_num[1].sum()) == visited[1].sum()  # the ordered row still skips exactly
  got = jax.jit(lambda q, k, v, i, m: block_causal_attention(q, k, v, **i, **kw, impl=impl, metadata=m))(
      q, k, v, ids, meta)
  want = block_causal_attention(q, k, v, **ids, **kw, impl="reference")
  np.testing.assert_allclose(got, want, atol=2e-6)
