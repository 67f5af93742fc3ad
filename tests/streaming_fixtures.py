"""Shared streaming-test pieces: one tiny windowed engine per pool size (compiled once per process)."""

from __future__ import annotations

import functools

import numpy as np

from tests.helpers import tiny_config
from wan_streamer_jax.codecs.training import create_codec
from wan_streamer_jax.config import TextConfig
from wan_streamer_jax.model.transformer import create_model
from wan_streamer_jax.streaming import SamplingConfig, StreamingEngine

# a ring of 1 sink + 4 window units; narrow random codecs keep the step cheap
OVERRIDES = {"model.attention_impl": "xla", "model.window_units": 4, "model.sink_units": 1,
             "audio.channels": (16, 32), "audio.latent_dim": 8, "video.channels": (8, 16)}


def config(**extra):
  return tiny_config(**{**OVERRIDES, **extra})


@functools.lru_cache(maxsize=6)
def engine(num_slots: int, sampling: SamplingConfig = SamplingConfig(), depth_layers: int = 0,
           **overrides) -> StreamingEngine:
  """`depth_layers > 0`: text_out and audio_out drawn slot by slot by the depth head; `overrides`: config."""
  cfg = config(**({"model.depth_layers": depth_layers} if depth_layers else {}), **overrides)
  return StreamingEngine(cfg, create_model(cfg, seed=0), create_codec(cfg, "audio", seed=1),
                         create_codec(cfg, "video", seed=2), num_slots=num_slots, sampling=sampling)


def random_inputs(eng: StreamingEngine, units: int, seed: int, slots: int | None = None) -> dict:
  """Random user streams: numpy inputs with a leading `[units]` axis (`slots` defaults to the pool)."""
  rng = np.random.default_rng(seed)
  S = eng.num_slots if slots is None else slots
  spec = eng.input_spec()
  text = np.where(rng.random((units, S, spec["text"].shape[1])) < 0.3,
                  rng.integers(0, 256, (units, S, spec["text"].shape[1])), TextConfig.PAD)
  return {"audio": np.clip(0.3 * rng.standard_normal((units, S) + spec["audio"].shape[1:]), -1, 1).astype(np.float32),
          "video": rng.integers(0, 256, (units, S) + spec["video"].shape[1:], dtype=np.uint8),
          "camera_on": rng.random((units, S)) < 0.7,
          "text": text.astype(np.int32),
          "seed": rng.integers(0, 2 ** 31 - 1, (units, S)).astype(np.int32)}


def unit(inputs_seq: dict, t: int) -> dict:
  return {k: v[t] for k, v in inputs_seq.items()}
