"""Benchmarks: `python -m launch.bench --what=NAME [--config=configs/small.py]`.

Each benchmark lives in `launch/benchmarks/NAME.py` as `run(cfg) -> dict` and
prints its figures as ONE JSON object on stdout (logs go to stderr). Ratios
are always measured against a baseline in the same run: machines are noisy.
"""

from __future__ import annotations

import importlib
import json
import sys

from absl import flags

from launch import common
from wan_streamer_jax.config import Config

WHATS = ("train_step", "attention", "data", "codecs", "codec_quality", "stream", "serve")
_WHAT = flags.DEFINE_enum("what", "train_step", WHATS, "Which benchmark to run.")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON to this file.")
_AUDIO_CODEC = flags.DEFINE_string("audio_codec", None, "codec_quality: a launch.train_codec audio run directory.")
_SETS = flags.DEFINE_list("sets", None, "codec_quality: utterance sets to score (default all: in_domain, "
                          "validation_voices, test_voices); choose settings without test_voices.")
_PNG = flags.DEFINE_string("png", None, "codec_quality: also draw spectrograms (reference, ours, Codec2) here.")
_CONFIG = common.config_flag("small", "Model/run config file.")
_STREAM_UNITS = flags.DEFINE_integer("stream_units", 200, "--what=stream: units of the single-session run.")
_STREAM_POOL_UNITS = flags.DEFINE_integer("stream_pool_units", 60, "--what=stream: units per pool size.")
_STREAM_LONG_UNITS = flags.DEFINE_integer("stream_long_units", 10_000, "--what=stream: units of the "
                                          "constant-time run (0 skips it; >= 400).")


def main(argv):
  del argv
  cfg = Config.from_dict(_CONFIG.value)
  module = importlib.import_module(f"launch.benchmarks.{_WHAT.value}")
  kwargs = {}
  if _WHAT.value == "stream":
    kwargs = {"units": _STREAM_UNITS.value, "pool_units": _STREAM_POOL_UNITS.value,
              "long_units": _STREAM_LONG_UNITS.value}
  elif _WHAT.value == "codec_quality":
    kwargs = {"audio_codec": _AUDIO_CODEC.value}
    if _SETS.value:
      kwargs["sets"] = tuple(_SETS.value)
    if _PNG.value:
      kwargs["spectrogram_png"] = _PNG.value
  result = {"what": _WHAT.value, "config": cfg.name, **module.run(cfg, **kwargs)}
  text = json.dumps(result, sort_keys=True)
  print(text, flush=True)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")


def run():
  common.run(main)


if __name__ == "__main__":
  sys.exit(run())
