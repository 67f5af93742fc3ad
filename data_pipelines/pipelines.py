"""Grain input pipelines: raw windows (codec training) and unit-token sequences (Transformer).

Both read a random-access source (`builder.as_data_source(split)`,
`tfds.data_source(...)`, or any `__len__`/`__getitem__` object), then:

  source[process_index::process_count]      per-process shard (disjoint, covers every example)
  .seed(seed).shuffle().repeat(num_epochs)  a new permutation every epoch
  .random_map(window)                       a random window start per element (index-seeded)
  ... batch, prefetch threads, optional worker processes (mp_prefetch)

Iterators are checkpointable: `state = it.get_state()` then `it.set_state(state)`
(or Orbax `grain.checkpoint.CheckpointSave/Restore`) resumes with exactly the
same next batches.

Raw head (`raw_pipeline`), batch of B windows of N units:
  audio      float32 [B, N * samples_per_unit]   in [-1, 1]
  video      uint8   [B, N * 4, H, W, 3]         25 fps
  unit_mask  bool    [B, N]        False past the end of a short conversation (zero padding)
  video_mask bool    [B, N]        unit_mask and, for user windows, the camera was on (else black)
  audio_role, video_role int32 [B] 0 = user, 1 = model (which stream the window is from)
  index      int32   [B]           example index in the source
Token head (`token_pipeline`), batch of B packed sequences, S = units_per_example * L:
  tokens, segment_ids, unit_ids  int32 [B, S]   (see `packing`)
"""

from __future__ import annotations

import grain
import numpy as np

from data_pipelines.packing import TokenWindow, pack_windows
from wan_streamer_jax import schedule
from wan_streamer_jax.config import FRAMES_PER_UNIT, Config

ROLE_USER, ROLE_MODEL = 0, 1


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, {process_count})")
  return int(process_index), int(process_count)


def sharded_examples(source, *, seed: int, shuffle: bool = True, num_epochs: int | None = None,
                     process_index: int | None = None, process_count: int | None = None) -> grain.MapDataset:
  """This process's shard of `source`, shuffled per epoch, repeated (`None` = forever)."""
  pi, pc = _process(process_index, process_count)
  ds = grain.MapDataset.source(source)
  if len(ds) < pc:
    raise ValueError(f"{len(ds)} examples cannot be sharded over {pc} processes")
  ds = ds[pi::pc].seed(seed)
  if shuffle:
    ds = ds.shuffle()
  return ds.repeat(num_epochs)


class IndexedSource:
  """Wraps a random-access source; each element gains `_index`, its position in the source."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    return {**self.source[index], "_index": int(index)}


class RawWindow(grain.transforms.RandomMap):
  """Conversation -> one window of `units` units of raw audio and video (one role each)."""

  def __init__(self, units: int, samples_per_unit: int, role: str = "mixed"):
    if role not in ("mixed", "user", "model"):
      raise ValueError(f"role must be mixed|user|model, got {role!r}")
    self.units, self.spu, self.role = int(units), int(samples_per_unit), role

  def random_map(self, ex: dict, rng: np.random.Generator) -> dict:
    total = int(ex["num_units"])
    n = min(self.units, total)
    start = int(rng.integers(0, total - n + 1))
    camera = np.asarray(ex["user_camera_on"])[start:start + n]
    if self.role == "mixed":
      a_role = int(rng.integers(0, 2))
      v_role = int(rng.integers(0, 2)) if camera.all() else ROLE_MODEL
    else:
      a_role = v_role = ROLE_USER if self.role == "user" else ROLE_MODEL
    audio = np.asarray(ex["model_audio" if a_role else "user_audio"])[start * self.spu:(start + n) * self.spu]
    video = np.asarray(ex["model_video" if v_role else "user_video"])[
        start * FRAMES_PER_UNIT:(start + n) * FRAMES_PER_UNIT]
    out_audio = np.zeros(self.units * self.spu, np.float32)
    out_audio[:audio.shape[0]] = audio
    out_video = np.zeros((self.units * FRAMES_PER_UNIT,) + video.shape[1:], np.uint8)
    out_video[:video.shape[0]] = video
    mask = np.zeros(self.units, bool)
    mask[:n] = True
    video_mask = mask.copy()
    if v_role == ROLE_USER:
      video_mask[:n] &= camera
    return {"audio": out_audio, "video": out_video, "unit_mask": mask, "video_mask": video_mask,
            "audio_role": np.int32(a_role),
            "video_role": np.int32(v_role), "index": np.int32(ex["_index"])}


def _read_options(num_threads: int, prefetch: int) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)


def _maybe_workers(ds: grain.IterDataset, worker_count: int, worker_buffer_size: int) -> grain.IterDataset:
  if worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                     per_worker_buffer_size=worker_buffer_size))
  return ds


def raw_pipeline(source, cfg: Config, *, units: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 num_epochs: int | None = None, role: str = "mixed", process_index: int | None = None,
                 process_count: int | None = None, num_threads: int = 2, prefetch: int = 8,
                 worker_count: int = 0, worker_buffer_size: int = 2, drop_remainder: bool = True,
                 window_map: grain.transforms.RandomMap | None = None) -> grain.IterDataset:
  """Raw audio/video windows for codec training (batch layout in the module docstring).

  `window_map` (e.g. `augment.CodecAugment`) runs on each window before batching, seeded per
  element like the window choice (a resumed iterator sees the same windows).
  """
  ds = sharded_examples(IndexedSource(source), seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                        process_index=process_index, process_count=process_count)
  ds = ds.random_map(RawWindow(units, cfg.audio.samples_per_unit, role))
  if window_map is not None:
    ds = ds.random_map(window_map)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  it = ds.to_iter_dataset(_read_options(num_threads, prefetch))
  return _maybe_workers(it, worker_count, worker_buffer_size)


def token_pipeline(source, cfg: Config, *, batch_size: int | None = None, seq_units: int | None = None,
                   seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                   process_index: int | None = None, process_count: int | None = None, num_threads: int = 0,
                   prefetch: int = 64, num_packing_bins: int | None = None, worker_count: int = 0,
                   worker_buffer_size: int = 2, drop_remainder: bool = True,
                   own_stream_swap: float = 0.0) -> grain.IterDataset:
  """Packed unit-token sequences for the Transformer: `tokens/segment_ids/unit_ids` int32 `[B, S]`
  (and `target_tokens` with `loss.text_in_target="heard"`: `packing.heard_targets`).

  Defaults: `batch_size = cfg.train.batch_size`, `seq_units = cfg.train.units_per_example`.
  `own_stream_swap`: the training feed's `cfg.train.own_stream_swap` (evaluation batches: 0, clean);
  `target_tokens` come whenever `cfg.separate_targets`, `loss_marks` whenever `cfg.loss_marks`.
  """
  batch_size = batch_size or cfg.train.batch_size
  seq_units = seq_units or cfg.train.units_per_example
  layout = schedule.unit_layout(cfg)
  ds = sharded_examples(source, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                        process_index=process_index, process_count=process_count)
  # Sinks only exist with an attention window; then a window keeps the conversation's first units.
  sinks = cfg.model.sink_units if cfg.model.window_units is not None else 0
  heard = cfg.loss.text_in_target == "heard"
  targets = cfg.separate_targets
  ds = ds.random_map(TokenWindow(layout, seq_units, sinks, heard=heard, text_lead=cfg.text.out_lead_units,
                                 targets=targets, own_swap=own_stream_swap, answers=cfg.loss.answer_weight != 1.0,
                                 pauses=cfg.loss.pause_weight != 1.0, stops=cfg.loss.stop_weight != 1.0))
  it = ds.to_iter_dataset(_read_options(num_threads, prefetch))
  it = pack_windows(it, seq_units, layout.tokens_per_unit, num_packing_bins or max(2, batch_size), seed,
                    with_targets=targets, with_marks=cfg.loss_marks)
  it = it.batch(batch_size, drop_remainder=drop_remainder)
  return _maybe_workers(it, worker_count, worker_buffer_size)
