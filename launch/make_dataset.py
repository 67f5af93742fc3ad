"""Builds the synthetic dialogue corpus (or ingests a recordings folder) as TFDS ArrayRecord.

    python -m launch.make_dataset --config=configs/small.py --size=tiny --data_dir=~/tensorflow_datasets
    python -m launch.make_dataset --config=configs/small.py --recordings=/path/to/recordings

Progress bars come from TFDS (one per split). The corpus for a config lives
in `{data_dir}/synthetic_dialogues/{size}_{H}x{W}_{rate}hz_t{slots}_s{seed}/`;
read it back with `builder.as_data_source(split)` (see data_pipelines.pipelines).
A built corpus is never rebuilt or overwritten: delete its folder to regenerate.
Asking for a corpus whose folder holds another number of conversations (e.g.
`--size=small` after a `--num_train=300` build) is refused, naming both counts;
`--reuse_existing` uses the existing one deliberately.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time

from absl import flags, logging

from launch import common

_CONFIG = common.config_flag("small", "Model config (frame size, rate, slots).")
_SIZE = flags.DEFINE_enum("size", "tiny", ["tiny", "small", "full"], "Corpus size (conversations per split).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's, ~/tensorflow_datasets).")
_SEED = flags.DEFINE_integer("seed", 0, "Corpus seed (part of the corpus name).")
_USER_VOICES = flags.DEFINE_enum("user_voices", "classic", ["classic", "train", "validation", "test"],
                                 "Synthetic corpus: the users' voices (classic, or a data_pipelines.voices pool).")
_WORDS = flags.DEFINE_bool("word_by_word_replies", False, "Synthetic corpus: the model's speech said one word at a "
                           "time (`CorpusSpec.word_by_word_replies`: a word's voice depends on no word after it).")
_TRAIN = flags.DEFINE_integer("num_train", None, "Override the number of train conversations.")
_RECORDINGS = flags.DEFINE_string("recordings", None, "Ingest this recordings folder instead (folder builder).")
_ON_ERROR = flags.DEFINE_enum("on_error", "skip", ["skip", "raise"],
                              "Recordings: skip (and report) a bad conversation, or stop before writing anything.")
_VAL_FRACTION = flags.DEFINE_float("validation_fraction", 0.0, "Recordings: fraction held out as validation.")
_REUSE = flags.DEFINE_bool("reuse_existing", False, "Use an existing corpus of this name even if its split "
                           "sizes differ from the ones asked for.")


def check_existing(builder, requested: dict | None, reuse: bool) -> None:
  """Refuses (ConfigError) a prepared corpus whose split sizes differ from `requested`."""
  from wan_streamer_jax.config import ConfigError
  if not builder.is_prepared() or not requested:
    return
  have = {name: split.num_examples for name, split in builder.info.splits.items()}
  diffs = {k: (have.get(k), v) for k, v in requested.items() if v and have.get(k) != v}
  if not diffs:
    return
  what = ", ".join(f"{k}: {h} built, {w} asked" for k, (h, w) in sorted(diffs.items()))
  if not reuse:
    raise ConfigError(f"{builder.data_dir} already holds this corpus with other split sizes ({what}); "
                      "delete that folder to rebuild it, use another --data_dir, or pass --reuse_existing")
  logging.warning("reusing %s despite other split sizes (%s)", builder.data_dir, what)


def main(argv):
  del argv
  from wan_streamer_jax.config import Config
  cfg = Config.from_dict(_CONFIG.value)
  data_dir = os.path.expanduser(_DATA_DIR.value) if _DATA_DIR.value else None
  if _RECORDINGS.value:
    from data_pipelines.folder_builder import make_folder_builder
    builder = make_folder_builder(cfg, os.path.expanduser(_RECORDINGS.value), data_dir=data_dir,
                                  on_error=_ON_ERROR.value, validation_fraction=_VAL_FRACTION.value)
  else:
    from data_pipelines.synthetic_builder import make_synthetic_builder
    builder = make_synthetic_builder(cfg, _SIZE.value, data_dir=data_dir, seed=_SEED.value,
                                     user_voices=_USER_VOICES.value, word_by_word_replies=_WORDS.value,
                                     num_examples={"train": _TRAIN.value} if _TRAIN.value else None)
  if not _RECORDINGS.value:
    check_existing(builder, getattr(builder, "_num_examples", None), _REUSE.value)
  if builder.is_prepared():
    logging.info("already built: %s", builder.data_dir)
  t0 = time.time()
  # TFDS prints "Downloading and preparing dataset ..." to stdout though nothing is downloaded
  with contextlib.nullcontext() if common.verbose() else contextlib.redirect_stdout(io.StringIO()):
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
  common.run(main)


if __name__ == "__main__":
  sys.exit(run())
