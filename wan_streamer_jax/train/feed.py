"""Host batches -> global sharded arrays (single- and multi-process), with input checks."""

from __future__ import annotations

import jax
import numpy as np

from wan_streamer_jax import schedule
from wan_streamer_jax.config import KINDS, Config
from wan_streamer_jax.run_config import MARK_CODES

BATCH_KEYS = ("tokens", "segment_ids", "unit_ids")


def batch_keys(cfg: Config) -> tuple[str, ...]:
  """The keys of a training batch: `BATCH_KEYS`, plus `target_tokens` when `cfg.separate_targets` and
  `loss_marks` when `cfg.loss_marks`."""
  return (BATCH_KEYS + (("target_tokens",) if cfg.separate_targets else ())
          + (("loss_marks",) if cfg.loss_marks else ()))


def process_slice(global_batch_size: int) -> slice:
  """Rows of the global batch this process feeds (data sharded per process)."""
  n, i = jax.process_count(), jax.process_index()
  if global_batch_size % n:
    raise ValueError(f"train.batch_size={global_batch_size} must be divisible by the process count {n}")
  per = global_batch_size // n
  return slice(i * per, (i + 1) * per)


def check_batch(cfg: Config, batch: dict, rows: int | None = None) -> None:
  """Raises a ValueError naming the field, what was expected and what was received.

  Expects int32 `[rows, units_per_example * tokens_per_unit]` arrays `tokens`
  (each slot inside its kind's vocabulary), `segment_ids` (>= 0) and
  `unit_ids` (>= 0), and `target_tokens` (like `tokens`) and `loss_marks` (`run_config.MARK_CODES`) when
  `batch_keys(cfg)` names them.
  Runs on host numpy, before anything is compiled.
  """
  keys = batch_keys(cfg)
  layout = schedule.unit_layout(cfg)
  rows = cfg.train.batch_size if rows is None else rows
  shape = (rows, cfg.train.units_per_example * layout.tokens_per_unit)
  missing = [k for k in keys if k not in batch]
  if missing:
    raise ValueError(f"batch: expected keys {keys} (loss.text_in_target={cfg.loss.text_in_target!r}, "
                     f"train.own_stream_swap={cfg.train.own_stream_swap}, "
                     f"loss.answer_weight={cfg.loss.answer_weight}), "
                     f"missing {missing} (got {sorted(batch)})")
  for k in keys:
    a = batch[k]
    if tuple(a.shape) != shape:
      raise ValueError(f"batch[{k!r}]: expected shape {shape} (rows x units_per_example*tokens_per_unit="
                       f"{cfg.train.units_per_example}*{layout.tokens_per_unit}), got {tuple(a.shape)}")
    if a.dtype != np.int32:
      raise ValueError(f"batch[{k!r}]: expected dtype int32, got {a.dtype}")
  vocab = layout.tile(cfg.train.units_per_example).vocab
  for k in ("tokens", "target_tokens"):
    if k not in keys:
      continue
    tokens = np.asarray(batch[k])
    bad = (tokens < 0) | (tokens >= vocab[None])
    if bad.any():
      r, c = np.argwhere(bad)[0]
      kind = KINDS[layout.kind[c % layout.tokens_per_unit]]
      raise ValueError(f"batch[{k!r}]: expected {kind} ids in [0, {vocab[c]}) at row {r} position {c}, "
                       f"got {tokens[r, c]}")
  for k in ("segment_ids", "unit_ids"):
    if (np.asarray(batch[k]) < 0).any():
      raise ValueError(f"batch[{k!r}]: expected values >= 0, got min {np.asarray(batch[k]).min()}")
  if "loss_marks" in keys and not np.isin(batch["loss_marks"], MARK_CODES).all():
    raise ValueError(f"batch['loss_marks']: expected codes in {MARK_CODES}, got {np.unique(batch['loss_marks'])[:8]}")


def to_global(local_batch: dict, shardings: dict) -> dict:
  """Process-local numpy rows -> global `jax.Array`s laid out by `shardings`."""
  return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v))
          for k, v in local_batch.items()}
