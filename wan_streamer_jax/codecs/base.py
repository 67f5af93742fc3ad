"""Streaming codec API shared by the audio and video codecs.

Every codec implements two traceable core methods over a whole number of its
time units, with an explicit carried state (a pytree of fixed-shape arrays):

    codes, enc_state = codec.encode_chunk(x, enc_state)
    y, dec_state     = codec.decode_chunk(codes, dec_state)

and the public API built on them:

- `encode(x)` / `decode(codes)`: whole clips, zero state (the offline call);
- `init_state(batch) -> CodecState(encoder, decoder)`;
- `encode_step(state, chunk) -> (state, codes)` and
  `decode_step(state, codes) -> (state, chunk)`: exactly one 160 ms unit;
- `functional() -> (CodecFns, params)`: the same steps as pure functions of
  `(params, state, chunk)`, for `jax.lax.scan`, `jax.jit` and `jax.export`.

The public methods validate their inputs in Python (shape, dtype, sample
rate / frame size, finite values when concrete) and raise `ValueError` naming
what was expected and what was received before anything is compiled. The pure
functions check shapes and dtypes only (values may be traced).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class CodecState(NamedTuple):
  """Carried streaming state of one codec: encoder and decoder parts (pytrees of arrays)."""
  encoder: Any
  decoder: Any


# So a `jax.export`-ed step that carries a CodecState can be serialised.
jax.export.register_namedtuple_serialization(CodecState, serialized_name="wan_streamer_jax.codecs.CodecState")


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_finite(x, what: str) -> None:
  if is_concrete(x):
    arr = np.asarray(x)
    bad = ~np.isfinite(arr)
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"{what}: expected finite values, received {int(bad.sum())} NaN/inf "
                       f"(first at index {idx}: {arr[idx]})")


def check_dtype(x, expected, what: str) -> None:
  dtype = getattr(x, "dtype", None)
  if dtype is None or np.dtype(dtype) != np.dtype(expected):
    raise ValueError(f"{what}: expected dtype {np.dtype(expected).name}, received "
                     f"{np.dtype(dtype).name if dtype is not None else type(x).__name__}")


def check_int_codes(codes, shape_desc: str, ndim: int, vocab_size: int, what: str,
                    concrete_checks: bool = True) -> None:
  dtype = getattr(codes, "dtype", None)
  if dtype is None or not np.issubdtype(np.dtype(dtype), np.integer):
    raise ValueError(f"{what}: expected integer codes (int32), received "
                     f"{np.dtype(dtype).name if dtype is not None else type(codes).__name__}")
  if codes.ndim != ndim:
    raise ValueError(f"{what}: expected codes of shape {shape_desc}, received shape {tuple(codes.shape)}")
  if concrete_checks and is_concrete(codes) and codes.size:
    arr = np.asarray(codes)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
      raise ValueError(f"{what}: expected code ids in [0, {vocab_size}) (codebook + MISSING), "
                       f"received values in [{lo}, {hi}]")


def check_state(state, expected: CodecState, what: str) -> None:
  if not isinstance(state, CodecState):
    raise ValueError(f"{what}: expected a CodecState from init_state(batch), received {type(state).__name__}")
  exp = jax.tree.map(lambda a: (tuple(a.shape), np.dtype(a.dtype).name), expected)
  got = jax.tree.map(lambda a: (tuple(a.shape), np.dtype(a.dtype).name), state)
  if jax.tree.structure(exp) != jax.tree.structure(got) or jax.tree.leaves(exp) != jax.tree.leaves(got):
    raise ValueError(f"{what}: expected a state shaped like init_state(batch={_batch_of(expected)}), "
                     f"received one shaped for batch={_batch_of(state)} or another config")


def _batch_of(state) -> Any:
  leaves = jax.tree.leaves(state)
  return leaves[0].shape[0] if leaves else "?"


@functools.lru_cache(maxsize=64)
def _jitted(graphdef, method: str, postprocess: bool):
  def fn(params, *args):
    model = nnx.merge(graphdef, params)
    out = getattr(model, method)(*args)
    if postprocess and method == "decode_chunk":
      out = (model.postprocess(out[0]), out[1])
    return out
  return jax.jit(fn)


@functools.lru_cache(maxsize=16)
def _jitted_fns_step(fns):
  return jax.jit(fns.encode_chunk)


@dataclasses.dataclass(frozen=True)
class CodecFns:
  """Pure streaming functions of one codec architecture (`graphdef` is static and hashable).

  `fns, params = codec.functional()`; then, inside `jax.jit` / `jax.lax.scan` / `jax.export`:
  `state = fns.init_state(batch)`, `state, codes = fns.encode_step(params, state, chunk)`,
  `state, y = fns.decode_step(params, state, codes)`. `raw=True` returns the decoder's float
  output (audio unclipped; video in [-1, 1] scale) instead of the public format.

  `params` is the codec's `nnx.State` or its flat form `fns.flat_params(params)` (a dict of
  arrays keyed by path strings), which `jax.export` can serialise.
  """
  graphdef: Any
  state_template: Any = dataclasses.field(compare=False, hash=False, repr=False)  # init_state(1), numpy
  param_treedef: Any = dataclasses.field(compare=False, hash=False, repr=False)
  param_keys: tuple = dataclasses.field(compare=False, hash=False, repr=False, default=())

  def flat_params(self, params) -> dict:
    """nnx.State -> {"encoder/downs/0/kernel": array, ...} (string keys: serialisable by jax.export)."""
    return dict(zip(self.param_keys, jax.tree.leaves(params)))

  def _model(self, params):
    if not isinstance(params, nnx.State):
      params = jax.tree.unflatten(self.param_treedef, [params[k] for k in self.param_keys])
    return nnx.merge(self.graphdef, params)

  def init_state(self, batch: int) -> CodecState:
    return jax.tree.map(lambda a: jnp.zeros((batch, *a.shape[1:]), a.dtype), self.state_template)

  def encode(self, params, x):
    model = self._model(params)
    model.check_input(x, unit=False, concrete_checks=False)
    return model.encode_chunk(x, self.init_state(x.shape[0]).encoder)[0]

  def decode(self, params, codes, raw: bool = False):
    model = self._model(params)
    model.check_codes(codes, unit=False, concrete_checks=False)
    y = model.decode_chunk(codes, self.init_state(codes.shape[0]).decoder)[0]
    return y if raw else model.postprocess(y)

  def encode_step(self, params, state: CodecState, chunk):
    model = self._model(params)
    model.check_input(chunk, unit=True, concrete_checks=False)
    codes, enc = model.encode_chunk(chunk, state.encoder)
    return CodecState(enc, state.decoder), codes

  def encode_chunk(self, params, state: CodecState, x):
    """`x`: any whole number of units `[B, n * unit_len, ...]`, with carried state -> (state, codes)."""
    model = self._model(params)
    model.check_input(x, unit=False, concrete_checks=False)
    codes, enc = model.encode_chunk(x, state.encoder)
    return CodecState(enc, state.decoder), codes

  def encode_chunked(self, params, x, chunk_units: int = 16):
    """Whole clip(s) `[B, units * unit_len, ...]` -> codes, in jitted chunks of `chunk_units` units.

    One compile for any clip length (the tail is zero-padded to a whole chunk,
    which by causality never changes earlier codes, and cut off again); equal
    to `encode` on the whole clip. Host loop: call it outside `jax.jit`.
    """
    model = self._model(params)
    model.check_input(x, unit=False)
    unit_len = getattr(model.cfg, "samples_per_unit", None) or model.cfg.frames_per_unit
    x = np.asarray(x)
    total_units = x.shape[1] // unit_len
    step_len = chunk_units * unit_len
    pad = (-x.shape[1]) % step_len
    if pad:
      x = np.concatenate([x, np.zeros((x.shape[0], pad, *x.shape[2:]), x.dtype)], axis=1)
    step = _jitted_fns_step(self)
    state, outs = self.init_state(x.shape[0]), []
    for i in range(x.shape[1] // step_len):
      state, codes = step(params, state, x[:, i * step_len:(i + 1) * step_len])
      outs.append(np.asarray(codes))
    codes = np.concatenate(outs, axis=1)
    per_unit = codes.shape[1] // (x.shape[1] // unit_len)
    return codes[:, : total_units * per_unit]

  def decode_step(self, params, state: CodecState, codes, raw: bool = False):
    model = self._model(params)
    model.check_codes(codes, unit=True, concrete_checks=False)
    y, dec = model.decode_chunk(codes, state.decoder)
    return CodecState(state.encoder, dec), (y if raw else model.postprocess(y))


class StreamingCodec(nnx.Module):
  """Base class; subclasses define `encode_chunk`, `decode_chunk`, `init_state`, the checks and `postprocess`."""

  # --- to implement -------------------------------------------------------
  def encode_chunk(self, x, enc_state):  # pragma: no cover - abstract
    raise NotImplementedError

  def decode_chunk(self, codes, dec_state):  # pragma: no cover - abstract
    raise NotImplementedError

  def init_state(self, batch: int) -> CodecState:  # pragma: no cover - abstract
    raise NotImplementedError

  def check_input(self, x, *, unit: bool, concrete_checks: bool = True, **rate) -> None:  # pragma: no cover
    raise NotImplementedError

  def check_codes(self, codes, *, unit: bool, concrete_checks: bool = True) -> None:  # pragma: no cover
    raise NotImplementedError

  def postprocess(self, y):  # pragma: no cover - abstract
    raise NotImplementedError

  # --- public API ---------------------------------------------------------
  def _run(self, method: str, *args, postprocess: bool = False):
    graphdef, params = nnx.split(self)
    return _jitted(graphdef, method, postprocess)(params, *args)

  def encode(self, x, **rate):
    """Whole clip -> codes (offline: the streaming computation from a zero state)."""
    self.check_input(x, unit=False, **rate)
    return self._run("encode_chunk", jnp.asarray(x), self.init_state(x.shape[0]).encoder)[0]

  def decode(self, codes, *, raw: bool = False):
    """Codes of a whole clip -> signal (offline)."""
    self.check_codes(codes, unit=False)
    codes = jnp.asarray(codes, jnp.int32)
    return self._run("decode_chunk", codes, self.init_state(codes.shape[0]).decoder, postprocess=not raw)[0]

  def encode_step(self, state: CodecState, chunk, **rate):
    """One unit with carried state -> (state, codes of the unit)."""
    self.check_input(chunk, unit=True, **rate)
    check_state(state, self.init_state(chunk.shape[0]), "encode_step")
    codes, enc = self._run("encode_chunk", jnp.asarray(chunk), state.encoder)
    return CodecState(enc, state.decoder), codes

  def decode_step(self, state: CodecState, codes, *, raw: bool = False):
    """Codes of one unit with carried state -> (state, signal of the unit)."""
    self.check_codes(codes, unit=True)
    check_state(state, self.init_state(codes.shape[0]), "decode_step")
    y, dec = self._run("decode_chunk", jnp.asarray(codes, jnp.int32), state.decoder, postprocess=not raw)
    return CodecState(state.encoder, dec), y

  def functional(self) -> tuple[CodecFns, Any]:
    """`(fns, params)`: pure streaming functions + this codec's parameters (an nnx.State)."""
    graphdef, params = nnx.split(self)
    template = jax.tree.map(np.asarray, self.init_state(1))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = tuple("/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
                 .removesuffix("/value") for path, _ in leaves)
    return CodecFns(graphdef, template, treedef, keys), params
