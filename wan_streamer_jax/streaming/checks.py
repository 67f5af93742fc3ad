"""Host-side validation of one step's (or a scan's) inputs, before anything is traced or compiled.

Every failure is a `ValueError` naming the field, what was expected and what was
received. Nothing is donated or changed before the checks pass, so the state is
still usable after a rejected unit.
"""

from __future__ import annotations

import jax
import numpy as np

from wan_streamer_jax.config import TextConfig


def check_mask(name: str, mask, shape: tuple) -> None:
  dtype = getattr(mask, "dtype", None)
  if dtype is None or np.dtype(dtype) != np.bool_:
    raise ValueError(f"{name}: expected a bool array of shape {shape}, received "
                     f"{np.dtype(dtype).name if dtype is not None else type(mask).__name__}")
  if tuple(mask.shape) != shape:
    raise ValueError(f"{name}: expected shape {shape} (one flag per slot), received {tuple(mask.shape)}")


def check_inputs(spec: dict, meaning: dict, inputs: dict, active, reset, *, lead: tuple = (),
                 sample_rate: int | None = None, expected_rate: int | None = None) -> None:
  """Validates `inputs` against `spec` (name -> `jax.ShapeDtypeStruct`, per step).

  Args:
    spec: the engine's `input_spec()`.
    meaning: name -> human description of the axes (for the messages).
    inputs: name -> array of shape `lead + spec[name].shape`.
    active, reset: bool `lead + [slots]`.
    lead: leading axes (`(units,)` for `run_stream`).
    sample_rate, expected_rate: the caller's audio rate (optional) and the config's.
  """
  if not isinstance(inputs, dict):
    raise ValueError(f"inputs: expected a dict with keys {sorted(spec)}, received {type(inputs).__name__}")
  missing, unknown = sorted(set(spec) - set(inputs)), sorted(set(inputs) - set(spec))
  if missing or unknown:
    raise ValueError(f"inputs: expected keys {sorted(spec)}, received {sorted(inputs)} "
                     f"(missing {missing}, unknown {unknown})")
  if sample_rate is not None and sample_rate != expected_rate:
    raise ValueError(f"inputs['audio']: expected sample_rate={expected_rate} Hz, received {sample_rate} Hz "
                     "(resample first)")
  for name, sd in spec.items():
    x = inputs[name]
    want = tuple(lead) + tuple(sd.shape)
    dtype = getattr(x, "dtype", None)
    if dtype is None or np.dtype(dtype) != np.dtype(sd.dtype):
      raise ValueError(f"inputs[{name!r}]: expected dtype {np.dtype(sd.dtype).name} "
                       f"{meaning.get(name, '')}, received "
                       f"{np.dtype(dtype).name if dtype is not None else type(x).__name__}")
    if tuple(x.shape) != want:
      raise ValueError(f"inputs[{name!r}]: expected shape {want} {meaning.get(name, '')}, "
                       f"received {tuple(x.shape)}")
  slots = tuple(lead) + (spec["camera_on"].shape[0],)
  check_mask("active", active, slots)
  check_mask("reset", reset, slots)
  if not isinstance(inputs["audio"], jax.core.Tracer):
    audio = np.asarray(inputs["audio"])
    bad = ~np.isfinite(audio)
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"inputs['audio']: expected finite samples in [-1, 1], received {int(bad.sum())} "
                       f"NaN/inf (first at index {idx})")
  if not isinstance(inputs["text"], jax.core.Tracer):
    text = np.asarray(inputs["text"])
    if text.size and (text.min() < 0 or text.max() >= TextConfig.VOCAB_SIZE):
      raise ValueError(f"inputs['text']: expected bytes 0..255 or specials up to {TextConfig.VOCAB_SIZE - 1} "
                       f"(PAD={TextConfig.PAD} where nothing is typed), received values in "
                       f"[{int(text.min())}, {int(text.max())}]")


def slot_mask(indices, num_slots: int, name: str = "slots") -> np.ndarray:
  """Slot indices -> bool `[num_slots]`; ValueError for an index outside `[0, num_slots)`."""
  idx = np.asarray(indices).reshape(-1)
  if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= num_slots):
    raise ValueError(f"{name}: expected slot indices in [0, {num_slots}), received {idx.tolist()}")
  mask = np.zeros(num_slots, bool)
  mask[idx] = True
  return mask
