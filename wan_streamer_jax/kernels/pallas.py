"""`impl="pallas"`: the flash-style kernels behind one `jax.custom_vjp`.

Kernel families (chosen by `target`):
  "tpu": `pallas_tpu` -- grid over tile lists, scalar prefetch, Mosaic. Also
         the CPU path, under `interpret=True` or `pltpu.InterpretParams()`.
  "gpu": `pallas_gpu` -- Triton, a loop over the tile list per program.
Residuals: q, k, v, out, lse (float32 logsumexp per query and head); the
integer ids and metadata get float0 cotangents.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu

from wan_streamer_jax.kernels import pallas_gpu, pallas_tpu
from wan_streamer_jax.kernels.xla import F32, Static, float0_zeros


@dataclasses.dataclass(frozen=True)
class _Cfg:
  st: Static
  target: str
  interpret: object  # False | True | pltpu.InterpretParams


def resolve_interpret(interpret, target: str):
  """None -> compiled where the backend runs this kernel family, interpret mode elsewhere
  (CPU: the TPU kernels under `interpret=True`). An explicit False is trusted
  (e.g. `jax.export` for TPU/GPU from a CPU machine)."""
  if interpret is None:
    return jax.default_backend() != target
  return interpret


def check_inputs(q, target: str, interpret) -> None:
  """ValueError, naming the argument, for inputs this kernel family cannot take."""
  if interpret is not None and not isinstance(interpret, (bool, pltpu.InterpretParams)):
    raise ValueError(f"interpret: expected None, a bool or pltpu.InterpretParams, got {interpret!r}")
  if target == "gpu" and isinstance(interpret, pltpu.InterpretParams):
    raise ValueError("interpret: pltpu.InterpretParams is the TPU simulator; use True for the GPU kernels")
  d = q.shape[-1]
  if target == "gpu" and (d < 16 or d & (d - 1)):
    raise ValueError(f"q: the GPU (Triton) kernels need head_dim a power of two >= 16, got {d}")


def _ids_tpu(ids):
  qu, qs, ku, ks = ids
  qid_col, kid_col = jnp.stack([qu, qs], -1), jnp.stack([ku, ks], -1)
  return qid_col, kid_col.swapaxes(1, 2), qid_col.swapaxes(1, 2), kid_col


def _heads_first(x):
  return x.swapaxes(1, 2)


def _forward(cfg: _Cfg, q, k, v, ids, tiles):
  """-> (out `[B, Tq, H, D]`, lse `[B, Tq, H]`)."""
  if cfg.target == "gpu":
    out, lse = pallas_gpu.forward(cfg.st, q, k, v, ids, tiles, interpret=cfg.interpret)
    return out, lse.swapaxes(1, 2)
  qid_col, kid_row, _, _ = _ids_tpu(ids)
  out, lse = pallas_tpu.forward(cfg.st, _heads_first(q), _heads_first(k), _heads_first(v), qid_col,
                                kid_row, tiles, interpret=cfg.interpret)
  return _heads_first(out), lse[..., 0].swapaxes(1, 2)


def _backward(cfg: _Cfg, q, k, v, ids, tiles, out, lse, dout):
  delta = jnp.sum(dout.astype(F32) * out.astype(F32), axis=-1)  # [B, Tq, H]
  if cfg.target == "gpu":
    return pallas_gpu.backward(cfg.st, q, k, v, dout, lse.swapaxes(1, 2), delta.swapaxes(1, 2), ids,
                               tiles, interpret=cfg.interpret)
  col = lambda x: x.swapaxes(1, 2)[..., None]  # [B, Tq, H] -> [B, H, Tq, 1]
  dq, dk, dv = pallas_tpu.backward(cfg.st, _heads_first(q), _heads_first(k), _heads_first(v),
                                   _heads_first(dout), col(lse), col(delta), _ids_tpu(ids), tiles,
                                   interpret=cfg.interpret)
  return _heads_first(dq), _heads_first(dk), _heads_first(dv)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attend(cfg, q, k, v, ids, tiles):
  return _forward(cfg, q, k, v, ids, tiles)[0]


def _attend_fwd(cfg, q, k, v, ids, tiles):
  out, lse = _forward(cfg, q, k, v, ids, tiles)
  return out, (q, k, v, ids, tiles, out, lse)


def _attend_bwd(cfg, res, dout):
  q, k, v, ids, tiles, out, lse = res
  dq, dk, dv = _backward(cfg, q, k, v, ids, tiles, out, lse, dout)
  return dq, dk, dv, float0_zeros(ids), float0_zeros(tiles)


_attend.defvjp(_attend_fwd, _attend_bwd)


def pallas_attention(st: Static, q, k, v, ids, tiles, *, target: str, interpret=None):
  """Padded inputs as for `xla.xla_attention`; `[B, Tq, H, D]` out."""
  return _attend(_Cfg(st, target, resolve_interpret(interpret, target)), q, k, v, ids, tiles)


def forward_with_counts(st: Static, q, k, v, ids, tiles, *, interpret=True):
  """TPU-family forward that also returns, per (batch, head, query tile), the
  number of key tiles the kernel visited and how many of them it masked:
  int32 `[B, H, n_q_tiles, 2]` (for tests: skipping must be real)."""
  qid_col, kid_row, _, _ = _ids_tpu(ids)
  out, _, cnt = pallas_tpu.forward(st, _heads_first(q), _heads_first(k), _heads_first(v), qid_col,
                                   kid_row, tiles, interpret=interpret, count=True)
  b, h = cnt.shape[:2]
  cnt = cnt.reshape(b, h, -1, pallas_tpu.COUNT_BLOCK[0], pallas_tpu.COUNT_BLOCK[1])[:, :, :, 0, :2]
  return _heads_first(out), cnt
