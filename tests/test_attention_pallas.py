"""impl="pallas" against the dense reference, in both CPU interpret modes.

"interpret": `interpret=True` (the HLO interpreter); "simulator": the TPU
simulator `pltpu.InterpretParams()` (NaN-filled scratch, out-of-bounds block
indices raise). The GPU (Triton) loop kernels run here under interpret=True.
Tiles are 128 (the TPU minimum), sequences short: units of 1 token and units
of 300 tokens (> 2 tiles), tile edges inside units.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from wan_streamer_jax.kernels import block_causal_attention, prepare_attention, testing
from wan_streamer_jax.kernels.metadata import pad_ids
from wan_streamer_jax.kernels.pallas import forward_with_counts
from wan_streamer_jax.kernels.xla import Static

TPU_TILES = dict(block_q=128, block_k=128)
GPU_TILES = dict(block_q=64, block_k=32, pallas_target="gpu")
MODES = {"interpret": True, "simulator": pltpu.InterpretParams()}


@pytest.fixture(scope="module")
def cases():
  return {kind: testing.make_case(kind, seed=10 + i) for i, kind in enumerate(testing.CASES)}


@pytest.fixture(scope="module")
def references(cases):
  return {kind: testing.run_case(case, "reference") for kind, case in cases.items()}


def _check(got, want, tol):
  out, grads = got
  ref_out, ref_grads = want
  assert all(np.isfinite(x).all() for x in (out, *grads))
  assert testing.rel_err(out, ref_out) <= tol
  for name, g, r in zip("qkv", grads, ref_grads):
    assert testing.rel_err(g, r) <= tol, f"d{name}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", testing.CASES)
def test_pallas_f32_matches_reference(cases, references, kind, mode):
  got = testing.run_case(cases[kind], "pallas", interpret=MODES[mode], **TPU_TILES)
  _check(got, references[kind], 1e-5)
  pad = cases[kind]["q_segment"] == 0  # padding rows: exactly 0 (and finite, above)
  assert np.all(got[0][pad] == 0)


@pytest.mark.parametrize("mode", MODES)
def test_pallas_bf16_close_to_f32_reference(cases, references, mode):
  got = testing.run_case(cases["window"], "pallas", jnp.bfloat16, interpret=MODES[mode], **TPU_TILES)
  _check(got, references["window"], 2e-2)


@pytest.mark.parametrize("kind", ["window", "decode"])
def test_gpu_kernels_in_interpret_mode(cases, references, kind):
  got = testing.run_case(cases[kind], "pallas", interpret=True, **GPU_TILES)
  _check(got, references[kind], 1e-5)


@pytest.mark.parametrize("window", [None, 2])
def test_visited_tiles_equal_mask_count(window):
  """Skipping is real: the kernel's own counter == metadata == the dense mask's tile count."""
  case = testing.make_case("packed", seed=7, length=768, unit_sizes=(1, 7, 60, 130))
  case.update(window_units=window, sink_units=1)
  ids = {n: jnp.asarray(case[n]) for n in testing.IDS}
  kw = dict(window_units=case["window_units"], sink_units=case["sink_units"])
  meta = prepare_attention(**ids, impl="pallas", pallas_target="tpu", **kw, **TPU_TILES)
  visited, partial = testing.dense_tile_tables(**ids, block_q=meta.block_q, block_k=meta.block_k, **kw)
  assert int(meta.visited_tiles()) == visited.sum() < visited.size
  assert int(meta.fwd_mask.sum()) == partial.sum() <= visited.sum()

  tq, tk = meta.q_len_padded, meta.kv_len_padded
  pad = lambda x, n: jnp.pad(jnp.asarray(x), ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0)))
  st = Static(scale=0.25, block_q=meta.block_q, block_k=meta.block_k, **kw)
  padded_ids = (*pad_ids(ids["q_unit"], ids["q_segment"], tq), *pad_ids(ids["kv_unit"], ids["kv_segment"], tk))
  _, counts = jax.jit(lambda q, k, v: forward_with_counts(st, q, k, v, padded_ids, meta.arrays()))(
      pad(case["q"], tq), pad(case["k"], tk), pad(case["v"], tk))
  heads = case["q"].shape[2]
  counts = np.asarray(counts)  # [b, h, n_q_tiles, (visited, masked)]
  np.testing.assert_array_equal(counts[..., 0], np.broadcast_to(visited.sum(-1)[:, None], counts.shape[:3]))
  np.testing.assert_array_equal(counts[..., 1], np.broadcast_to(partial.sum(-1)[:, None], counts.shape[:3]))
  assert counts[..., 0].sum() == heads * visited.sum()


def test_new_layouts_do_not_recompile(cases):
  traces = []

  @jax.jit
  def step(q, k, v, ids):
    traces.append(1)
    meta = prepare_attention(**ids, window_units=2, sink_units=1, impl="pallas", **TPU_TILES)
    return block_causal_attention(q, k, v, **ids, window_units=2, sink_units=1, impl="pallas",
                                  metadata=meta, interpret=True)

  rng = np.random.default_rng(3)
  q, k, v = (jnp.asarray(cases["packed"][n]) for n in "qkv")
  for _ in range(3):
    unit, seg = testing.random_layout(rng, 2, q.shape[1], unit_sizes=(1, 7, 130, 300))
    step(q, k, v, dict(q_unit=unit, kv_unit=unit, q_segment=seg, kv_segment=seg))
  assert len(traces) == 1 and step._cache_size() == 1


def test_lowers_for_tpu_and_gpu():
  """Mosaic (TPU) and Triton (GPU) lowering run on this CPU machine via jax.export."""
  case = testing.make_case("window", length=512, head_dim=128)
  ids = {n: jnp.asarray(case[n]) for n in testing.IDS}
  for platform, target, tiles in (("tpu", "tpu", TPU_TILES), ("cuda", "gpu", dict(block_q=64, block_k=64))):
    def fn(q, k, v, ids):
      f = lambda q, k, v: block_causal_attention(q, k, v, **ids, window_units=2, sink_units=1,
                                                 impl="pallas", pallas_target=target, interpret=False,
                                                 **tiles)
      out, vjp = jax.vjp(f, q, k, v)
      return vjp(out)

    args = [jax.ShapeDtypeStruct(case[n].shape, jnp.bfloat16) for n in "qkv"]
    exp = jax.export.export(jax.jit(fn), platforms=[platform], disabled_checks=[
        jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(*args, ids)
    text = exp.mlir_module()
    marker = "tpu_custom_call" if platform == "tpu" else "triton"
    assert text.count(marker) >= 3, platform  # forward, dq, dk/dv


@pytest.mark.accelerator
@pytest.mark.parametrize("kind", testing.CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_compiled_kernel_on_accelerator(cases, references, kind, dtype):
  got = testing.run_case(cases[kind], "pallas", dtype)
  _check(got, references[kind], 1e-4 if dtype == jnp.float32 else 2e-2)
