"""Per-conversation codec-token examples: the input of the Transformer's data pipeline.

A token example (what the tokenisation launcher will write, one per
conversation of `units` units) is a dict of int32 numpy arrays:

  video_in, video_out   [units, (H/s) * (W/s)]   one latent frame per unit, row-major grid
  audio_in, audio_out   [units * 4, Q]           25 Hz codec frames, Q residual levels
  text_in, text_out     [units, text_slots]      byte tokens + PAD/WORD_END/END_OF_TURN/MISSING
  video_in_present      bool [units]             optional; False -> video_in is MISSING there
  num_units             int32 scalar

Out streams hold the model's tokens *of that unit* (not yet shifted; the
pipeline shifts them). `RandomTokenSource` makes such examples from random
tokens, deterministically per index, for tests and benchmarks until the codec
team's token dataset exists.
"""

from __future__ import annotations

import numpy as np

from wan_streamer_jax.config import AUDIO_FRAMES_PER_UNIT, Config

STREAMS = ("video_in", "audio_in", "text_in", "video_out", "audio_out", "text_out")


def token_example_spec(cfg: Config, units: int | None = None) -> dict:
  """Key -> (shape, dtype) of a token example (`None` for the variable unit count)."""
  u = units
  v, q, s = cfg.video.tokens_per_unit, cfg.audio.num_quantizers, cfg.text.text_slots
  fr = None if u is None else u * AUDIO_FRAMES_PER_UNIT
  return {
      "video_in": ((u, v), np.int32), "video_out": ((u, v), np.int32),
      "audio_in": ((fr, q), np.int32), "audio_out": ((fr, q), np.int32),
      "text_in": ((u, s), np.int32), "text_out": ((u, s), np.int32),
      "video_in_present": ((u,), np.bool_), "num_units": ((), np.int32),
  }


def token_features(cfg: Config):
  """TFDS features of a token example (what a tokenisation launcher writes as ArrayRecord)."""
  import tensorflow_datasets as tfds
  feats = {}
  for key, (shape, dtype) in token_example_spec(cfg).items():
    if key == "num_units":
      feats[key] = tfds.features.Scalar(dtype=dtype)
    else:
      feats[key] = tfds.features.Tensor(shape=shape, dtype=dtype,
                                        encoding="bytes" if dtype == np.int32 else "none")
  return tfds.features.FeaturesDict(feats)


def random_token_example(cfg: Config, units: int, rng: np.random.Generator,
                         camera_off_prob: float = 0.2, text_pad_prob: float = 0.6) -> dict:
  """One example of random tokens with the structure above."""
  v, q, s = cfg.video.tokens_per_unit, cfg.audio.num_quantizers, cfg.text.text_slots
  vc, ac = cfg.video.codebook_size, cfg.audio.codebook_size
  ex = {}
  for role in ("in", "out"):
    ex[f"video_{role}"] = rng.integers(0, vc, (units, v), dtype=np.int32)
    ex[f"audio_{role}"] = rng.integers(0, ac, (units * AUDIO_FRAMES_PER_UNIT, q), dtype=np.int32)
    text = rng.integers(0, 256, (units, s), dtype=np.int32)
    text[rng.random((units, s)) < text_pad_prob] = cfg.text.PAD
    ex[f"text_{role}"] = text
  present = np.ones(units, bool)
  if rng.random() < camera_off_prob:
    a = int(rng.integers(0, units))
    present[a:a + int(rng.integers(1, units + 1))] = False
  ex["video_in_present"] = present
  ex["num_units"] = np.int32(units)
  return ex


class RandomTokenSource:
  """Random-access source of random token examples (Grain `RandomAccessDataSource` protocol).

  Example `i` has `units` drawn from `[min_units, max_units]` and is a pure
  function of `(seed, i)`, so the source is picklable and needs no storage.
  """

  def __init__(self, cfg: Config, num_examples: int, min_units: int = 4, max_units: int = 64, seed: int = 0):
    if not 1 <= min_units <= max_units:
      raise ValueError(f"need 1 <= min_units <= max_units, got {min_units}, {max_units}")
    self.cfg, self.num_examples = cfg, int(num_examples)
    self.min_units, self.max_units, self.seed = min_units, max_units, seed

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.num_examples:
      raise IndexError(index)
    rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index)]))
    units = int(rng.integers(self.min_units, self.max_units + 1))
    return random_token_example(self.cfg, units, rng)

  def __repr__(self) -> str:
    return (f"RandomTokenSource(num_examples={self.num_examples}, units={self.min_units}..{self.max_units}, "
            f"seed={self.seed})")
