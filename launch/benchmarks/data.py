"""Data benchmark: corpus generation rate, pipeline throughput, headroom over the train step.

`python -m launch.bench --what=data --config=configs/small.py` prints:
  conversations_per_min     synthetic conversations generated per wall-clock minute (one process)
  raw_units_per_s           raw-window head (codec training), reading a freshly built TFDS corpus
  token_units_per_s         unit-token head (Transformer): non-padding units delivered per second
  train_units_per_s         units per second the jitted train step of this config consumes
  headroom_over_train_step  token_units_per_s / train_units_per_s (both measured in this run)
All pipelines run in this process with their default thread settings (no worker processes).
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
from absl import logging

from data_pipelines import pipelines
from data_pipelines.corpus import CorpusSpec, generate_conversation
from data_pipelines.speech import get_synthesizer
from data_pipelines.synthetic_builder import make_synthetic_builder
from data_pipelines.token_data import RandomTokenSource
from wan_streamer_jax.config import Config


def generation_rate(cfg: Config, num: int = 40) -> dict:
  spec = CorpusSpec.from_config(cfg, seed=12345)
  generate_conversation(spec, "train", 0)  # starts the eSpeak worker
  units, t0, c0 = 0, time.perf_counter(), time.process_time()
  for i in range(1, num + 1):
    units += int(generate_conversation(spec, "train", i)["num_units"])
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  synth = get_synthesizer(spec.sample_rate)
  return {"conversations_per_min": 60.0 * num / wall, "generated_units_per_s": units / wall,
          "generation_parent_cpu_fraction": cpu / wall, "speech_cache_entries": synth.num_cached,
          "mean_conversation_units": units / num}


def _throughput(it, batches: int, count) -> float:
  for _ in range(2):
    next(it)  # warm-up: threads, buffers
  t0, n = time.perf_counter(), 0
  for _ in range(batches):
    n += count(next(it))
  return n / (time.perf_counter() - t0)


def raw_throughput(cfg: Config, data_dir: str, num_train: int = 16, batches: int = 20) -> dict:
  builder = make_synthetic_builder(cfg, "tiny", data_dir=data_dir, seed=777,
                                   num_examples={"train": num_train, "validation": 0, "test": 0})
  t0 = time.perf_counter()
  builder.download_and_prepare()
  build_s = time.perf_counter() - t0
  source = builder.as_data_source("train")
  ds = pipelines.raw_pipeline(source, cfg, units=cfg.train.units_per_example, batch_size=cfg.train.batch_size,
                              process_index=0, process_count=1)
  rate = _throughput(iter(ds), batches, lambda b: int(b["unit_mask"].sum()))
  return {"raw_units_per_s": rate, "tiny_corpus_build_seconds": build_s}


def token_throughput(cfg: Config, batches: int = 200) -> dict:
  source = RandomTokenSource(cfg, 5000, min_units=4, max_units=160, seed=0)
  ds = pipelines.token_pipeline(source, cfg, process_index=0, process_count=1)
  L = None
  fill = []

  def count(b):
    nonlocal L
    L = L or b["tokens"].shape[1] // cfg.train.units_per_example
    valid = int((b["segment_ids"] > 0).sum()) // L
    fill.append(valid / (b["tokens"].shape[0] * cfg.train.units_per_example))
    return valid

  rate = _throughput(iter(ds), batches, count)
  return {"token_units_per_s": rate, "token_packing_fill": float(np.mean(fill))}


def run(cfg: Config) -> dict:
  out = {}
  out.update(generation_rate(cfg))
  logging.info("generation: %s", out)
  with tempfile.TemporaryDirectory() as tmp:
    out.update(raw_throughput(cfg, tmp))
  out.update(token_throughput(cfg))
  logging.info("pipelines: %s", out)
  try:
    from launch.benchmarks.train_step import measure_units_per_second
  except ImportError as e:  # the model side is not importable in this checkout
    out.update(train_units_per_s=None, headroom_over_train_step=None, headroom_note=f"train step unavailable: {e}")
    return out
  train_rate = float(measure_units_per_second(cfg))
  out.update(train_units_per_s=train_rate, headroom_over_train_step=out["token_units_per_s"] / train_rate)
  return out
