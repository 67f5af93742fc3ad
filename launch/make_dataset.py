"""Builds the synthetic dialogue corpus (or ingests a recordings folder) as TFDS ArrayRecord.

    python -m launch.make_dataset --config=configs/small.py --size=tiny --data_dir=~/tensorflow_datasets
    python -m launch.make_dataset --config=configs/small.py --recordings=/path/to/recordings

Progress bars come from TFDS (one per split). The corpus for a config lives
in `{data_dir}/synthetic_dialogues/{size}_{H}x{W}_{rate}hz_t{slots}_s{seed}/`;
read it back with `builder.as_data_source(split)` (see data_pipelines.pipelines).
A built corpus is never rebuilt or overwritten: delete its folder to regenerate.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from wan_streamer_jax.config import Config

_CONFIG = config_flags.DEFINE_config_file("config", "configs/small.py", "Model config (frame size, rate, slots).")
_SIZE = flags.DEFINE_enum("size", "tiny", ["tiny", "small", "full"], "Corpus size (conversations per split).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's, ~/tensorflow_datasets).")
_SEED = flags.DEFINE_integer("seed", 0, "Corpus seed (part of the corpus name).")
_USER_VOICES = flags.DEFINE_enum("user_voices", "classic", ["classic", "train", "validation", "test"],
                                 "Synthetic corpus: the users' voices (classic, or a data_pipelines.voices pool).")
_TRAIN = flags.DEFINE_integer("num_train", None, "Override the number of train conversations.")
_RECORDINGS = flags.DEFINE_string("recordings", None, "Ingest this recordings folder instead (folder builder).")
_ON_ERROR = flags.DEFINE_enum("on_error", "skip", ["skip", "raise"],
                              "Recordings: skip (and report) a bad conversation, or stop before writing anything.")
_VAL_FRACTION = flags.DEFINE_float("validation_fraction", 0.0, "Recordings: fraction held out as validation.")


def main(argv):
  del argv
  cfg = Config.from_dict(_CONFIG.value)
  data_dir = os.path.expanduser(_DATA_DIR.value) if _DATA_DIR.value else None
  if _RECORDINGS.value:
    from data_pipelines.folder_builder import make_folder_builder
    builder = make_folder_builder(cfg, os.path.expanduser(_RECORDINGS.value), data_dir=data_dir,
                                  on_error=_ON_ERROR.value, validation_fraction=_VAL_FRACTION.value)
  else:
    from data_pipelines.synthetic_builder import make_synthetic_builder
    builder = make_synthetic_builder(cfg, _SIZE.value, data_dir=data_dir, seed=_SEED.value,
                                     user_voices=_USER_VOICES.value, num_examples={"train": _TRAIN.value} if _TRAIN.value else None)
  if builder.is_prepared():
    logging.info("already built: %s", builder.data_dir)
  t0 = time.time()
  builder.download_and_prepare()
  summary = {"data_dir": str(builder.data_dir), "seconds": round(time.time() - t0, 1),
             "splits": {name: split.num_examples for name, split in builder.info.splits.items()}}
  skipped = getattr(builder, "skipped", None)
  if skipped:
    summary["skipped"] = skipped
    for s in skipped:
      logging.warning("skipped %s: %s", s["folder"], s["reason"])
  print(json.dumps(summary, indent=1), flush=True)


def run():
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
