"""Writes a few conversations as WAV + GIF (+ MP4 with sound when ffmpeg is there) + a PNG contact sheet
(frames, text slots and loudness per unit, with a legend of its marks).

    python -m launch.inspect_data --config=configs/small.py --num=3 --out_dir=/tmp/wan_inspect
    python -m launch.inspect_data --config=configs/small.py --size=small --data_dir=~/tensorflow_datasets

Reads the built corpus when `--data_dir/--size` point at one, otherwise
generates the conversations on the fly (same bytes: generation is
deterministic). Prints per-example statistics (loudness, speech activity,
lip-sync correlation, decoded text) as JSON lines on stdout.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import flags, logging

from data_pipelines import contact_sheet, media_io, text_slots
from data_pipelines.corpus import CorpusSpec, generate_conversation
from launch import common
from wan_streamer_jax.config import Config

_CONFIG = common.config_flag("small", "Model config (frame size, rate, slots): file or shipped name.")
_SIZE = flags.DEFINE_enum("size", "tiny", ["tiny", "small", "full"], "Corpus size to read, if built.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir of a built corpus (default: generate).")
_SPLIT = flags.DEFINE_string("split", "train", "Split.")
_NUM = flags.DEFINE_integer("num", 3, "How many conversations.")
_START = flags.DEFINE_integer("start", 0, "First conversation index.")
_SEED = flags.DEFINE_integer("seed", 0, "Corpus seed.")
_OUT = flags.DEFINE_string("out_dir", "/tmp/wan_inspect", "Output folder.")
_MP4 = flags.DEFINE_bool("mp4", True, "Also write an MP4 with sound (needs imageio-ffmpeg).")


def _examples(cfg: Config):
  if _DATA_DIR.value:
    from data_pipelines.synthetic_builder import make_synthetic_builder
    builder = make_synthetic_builder(cfg, _SIZE.value, data_dir=os.path.expanduser(_DATA_DIR.value),
                                     seed=_SEED.value)
    if builder.is_prepared():
      source = builder.as_data_source(_SPLIT.value)
      logging.info("reading %s (%d examples)", builder.data_dir, len(source))
      for i in range(_START.value, min(len(source), _START.value + _NUM.value)):
        yield source[i]
      return
    logging.warning("no corpus at %s; generating on the fly", builder.data_dir)
  spec = CorpusSpec.from_config(cfg, seed=_SEED.value)
  for i in range(_START.value, _START.value + _NUM.value):
    yield generate_conversation(spec, _SPLIT.value, i)


def main(argv):
  del argv
  cfg = Config.from_dict(_CONFIG.value)
  os.makedirs(_OUT.value, exist_ok=True)
  sr = cfg.audio.sample_rate
  for ex in _examples(cfg):
    cid = ex["conversation_id"]
    cid = cid.decode() if isinstance(cid, bytes) else cid
    base = os.path.join(_OUT.value, cid)
    media_io.write_wav(base + "_user.wav", ex["user_audio"], sr)
    media_io.write_wav(base + "_model.wav", ex["model_audio"], sr)
    both = np.concatenate([np.asarray(ex["user_video"]), np.asarray(ex["model_video"])], axis=2)
    media_io.write_gif(base + ".gif", both, scale=max(1, 128 // cfg.video.height))
    files = [base + "_user.wav", base + "_model.wav", base + ".gif", base + "_sheet.png"]
    if _MP4.value and media_io.have_ffmpeg():
      mix = 0.5 * (np.asarray(ex["user_audio"]) + np.asarray(ex["model_audio"]))
      media_io.write_wav(base + "_mix.wav", mix, sr)
      scale = max(1, 128 // cfg.video.height)
      big = np.repeat(np.repeat(both, scale, axis=1), scale, axis=2)
      media_io.write_mp4(base + ".mp4", big, audio_path=base + "_mix.wav")
      files.append(base + ".mp4")
    contact_sheet.contact_sheet(ex).save(base + "_sheet.png")
    stats = {
        "conversation_id": cid, "num_units": int(ex["num_units"]),
        "task": ex["task"].decode() if isinstance(ex["task"], bytes) else ex["task"],
        "user_audio": contact_sheet.audio_stats(np.asarray(ex["user_audio"]), sr),
        "model_audio": contact_sheet.audio_stats(np.asarray(ex["model_audio"]), sr),
        "lip_sync_corr": round(contact_sheet.lip_sync_correlation(
            np.asarray(ex["model_video"]), np.asarray(ex["model_audio"]), cfg.audio.samples_per_unit), 4),
        "camera_on_fraction": round(float(np.mean(ex["user_camera_on"])), 3),
        "model_text": text_slots.decode_slots(ex["model_text"]),
        "user_text": text_slots.decode_slots(ex["user_text"]) or None,
        "files": files,
    }
    print(json.dumps(stats), flush=True)


def run():
  common.run(main)


if __name__ == "__main__":
  run()
