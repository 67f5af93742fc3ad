"""impl="xla" (chunked, skipping) against the dense reference: forward and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wan_streamer_jax.kernels import block_causal_attention, prepare_attention, testing
from wan_streamer_jax.kernels.api import resolve_impl

TILES = dict(block_q=64, block_k=48)  # tile edges inside units; several tiles per sequence


@pytest.fixture(scope="module")
def cases():
  return {kind: testing.make_case(kind, seed=i, length=256) for i, kind in enumerate(testing.CASES)}


@pytest.fixture(scope="module")
def references(cases):
  return {kind: testing.run_case(case, "reference") for kind, case in cases.items()}


@pytest.mark.parametrize("kind", testing.CASES)
def test_xla_matches_reference_f32(cases, references, kind):
  out, grads = testing.run_case(cases[kind], "xla", **TILES)
  ref_out, ref_grads = references[kind]
  assert testing.rel_err(out, ref_out) <= 1e-5
  for name, g, r in zip("qkv", grads, ref_grads):
    assert testing.rel_err(g, r) <= 1e-5, name


def test_xla_bf16_close_to_f32_reference(cases, references):
  out, grads = testing.run_case(cases["window"], "xla", jnp.bfloat16, **TILES)
  ref_out, ref_grads = references["window"]
  assert testing.rel_err(out, ref_out) <= 2e-2
  for name, g, r in zip("qkv", grads, ref_grads):
    assert testing.rel_err(g, r) <= 2e-2, name


def test_padding_rows_are_zero_and_finite(cases):
  case = cases["packed"]
  out, grads = testing.run_case(case, "xla", **TILES)
  assert all(np.isfinite(x).all() for x in (out, *grads))
  pad = case["q_segment"] == 0
  assert pad.any()
  assert np.all(out[pad] == 0)


def test_auto_is_xla_on_cpu():
  assert jax.default_backend() != "cpu" or resolve_impl("auto") == "xla"


def test_new_layouts_do_not_retrace(cases):
  """Same shapes, different ids: one trace, one compile (metadata is data, not static)."""
  traces = []

  @jax.jit
  def step(q, k, v, ids):
    traces.append(1)
    meta = prepare_attention(ids["q_unit"], ids["kv_unit"], ids["q_segment"], ids["kv_segment"],
                             window_units=2, sink_units=1, impl="xla", **TILES)
    return block_causal_attention(q, k, v, **ids, window_units=2, sink_units=1, impl="xla", metadata=meta)

  rng = np.random.default_rng(5)
  q, k, v = (jnp.asarray(cases["packed"][n]) for n in "qkv")
  for _ in range(3):
    unit, seg = testing.random_layout(rng, 2, 256, unit_sizes=(1, 5, 40, 130))
    step(q, k, v, dict(q_unit=unit, kv_unit=unit, q_segment=seg, kv_segment=seg))
  assert len(traces) == 1
  assert step._cache_size() == 1


@pytest.mark.parametrize("units,window,sinks,chunks", [(33, 24, 1, (1, 2, 3, 4, 7)), (17, 3, 5, (2, 3, 5)),
                                                      (20, None, 0, (3, 6))])
def test_the_chunk_choice_counts_the_pairs_the_kernel_visits(units, window, sinks, chunks):
  """`visited_chunk_pairs` (what `unit_chunk_tokens` minimises) is the number of chunk pairs the
  metadata lists for a whole-unit-chunked training window (ragged last chunks included)."""
  from wan_streamer_jax.kernels.xla import visited_chunk_pairs
  L = 8
  unit = jnp.asarray(np.repeat(np.arange(units, dtype=np.int32), L)[None])
  for n in chunks:
    meta = prepare_attention(unit, unit, window_units=window, sink_units=sinks, impl="xla",
                             block_q=n * L, block_k=n * L)
    assert int(jnp.sum(meta.fwd_num)) == visited_chunk_pairs(units, n, window_units=window,
                                                              sink_units=sinks), n


def test_the_demo_window_gets_three_unit_chunks_and_stays_exact():
  """The demo's 33-unit training windows of 48 tokens: 3-unit chunks (11 of them, no padding;
  2-unit chunks, the decode rule, pad to 17); the chunked kernel at that size matches the oracle."""
  from wan_streamer_jax.config import load_config
  from wan_streamer_jax.kernels.xla import unit_chunk_tokens
  cfg = load_config("demo")
  m, units = cfg.model, cfg.train.units_per_example
  assert unit_chunk_tokens(48, units, window_units=m.window_units, sink_units=m.sink_units) == 144
  assert unit_chunk_tokens(48) == 96 and unit_chunk_tokens(176) == 176 and unit_chunk_tokens(32) == 128
  case = testing.make_case("window", seed=3, length=288, unit_sizes=(48,))
  out, grads = testing.run_case(case, "xla", block_q=144, block_k=144)
  ref_out, ref_grads = testing.run_case(case, "reference")
  assert testing.rel_err(out, ref_out) <= 1e-5
  for name, g, r in zip("qkv", grads, ref_grads):
    assert testing.rel_err(g, r) <= 1e-5, name
