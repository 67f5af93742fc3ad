"""Tokenise a corpus with trained codecs into the Transformer's token dataset.

    python -m launch.tokenize --config=small --data_dir=DATA \
        --audio_codec=runs/codec_audio_small --video_codec=runs/codec_video_small \
        --out_dir=DATA/tokens_small [--splits=train,validation,test]

The record format is `data_pipelines/token_data.py`'s. Conversations are
encoded with each codec's public chunked encoder (`CodecFns.encode_chunked`:
fixed chunks of `--chunk_units` units, streaming state carried, one compile).

Resumable and self-repairing: shard `i` of a split holds conversations
`[i*S, (i+1)*S)`; a shard whose `.done` marker and checksum match is kept, a
missing, truncated or corrupted one is named and rewritten. The manifest pins
the codec checkpoints: a restart with other codecs into the same `--out_dir`
is refused. `--audio_codec=random` / `--video_codec=random` use untrained
codecs (smoke tests). Run it as a module (`python -m launch.tokenize`): as a
script its name would shadow the standard library's `tokenize`.
"""

from __future__ import annotations

import json
import os

from absl import flags

from launch import common

_CONFIG = common.config_flag("small", "Model config (its codec sections fix the token format).")
_AUDIO = flags.DEFINE_string("audio_codec", None, "train_codec workdir of the audio codec, or 'random'.")
_VIDEO = flags.DEFINE_string("video_codec", None, "train_codec workdir of the video codec, or 'random'.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir of the corpus.")
_SIZE = flags.DEFINE_enum("corpus_size", "small", ["tiny", "small", "full"], "Corpus size.")
_SPLITS = flags.DEFINE_list("splits", ["train", "validation", "test"], "Splits to tokenise.")
_OUT = flags.DEFINE_string("out_dir", None, "Token dataset directory.")
_SHARD = flags.DEFINE_integer("shard_size", 64, "Conversations per shard.")
_CHUNK = flags.DEFINE_integer("chunk_units", 16, "Units encoded per jitted call (state carried).")
_LIMIT = flags.DEFINE_integer("max_conversations", None, "Only the first N conversations of each split.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show tqdm progress bars on stderr.")


def _codec(kind: str, spec: str, cfg):
  from data_pipelines.token_data import FORMAT_FIELDS
  from wan_streamer_jax.codecs import training
  from wan_streamer_jax.config import ConfigError
  if spec == "random":
    return training.create_codec(cfg, kind, seed=0), {"checkpoint": "random"}
  codec, got_kind, step = training.load_codec(spec)
  if got_kind != kind:
    raise ConfigError(f"--{kind}_codec: expected a {kind} codec run, received a {got_kind} codec at {spec}")
  want = training.codec_config(cfg, kind)
  for key in FORMAT_FIELDS[kind]:
    if getattr(codec.cfg, key) != getattr(want, key):
      raise ConfigError(f"--{kind}_codec: the model config needs {kind}.{key}={getattr(want, key)!r}, "
                        f"the codec at {spec} has {getattr(codec.cfg, key)!r}")
  return codec, {"checkpoint": os.path.abspath(spec), "step": int(step)}


def main(argv):
  del argv
  from data_pipelines.synthetic_builder import make_synthetic_builder
  from data_pipelines.tokenize_corpus import tokenize_corpus
  from wan_streamer_jax.config import Config, ConfigError

  cfg = Config.from_dict(_CONFIG.value)
  if not (_AUDIO.value and _VIDEO.value and _OUT.value):
    raise ConfigError("--audio_codec, --video_codec and --out_dir are required")
  out_dir = os.path.abspath(os.path.expanduser(_OUT.value))
  audio, a_info = _codec("audio", _AUDIO.value, cfg)
  video, v_info = _codec("video", _VIDEO.value, cfg)
  builder = make_synthetic_builder(cfg, _SIZE.value, data_dir=_DATA_DIR.value)
  if not builder.is_prepared():
    raise ConfigError(f"no {_SIZE.value} corpus for {cfg.name} under {builder.data_dir}: build it with "
                      f"python -m launch.make_dataset --config={cfg.name} --size={_SIZE.value} "
                      f"--data_dir={_DATA_DIR.value or '~/tensorflow_datasets'}")
  results = tokenize_corpus(out_dir, cfg, builder, audio, video, {"audio": a_info, "video": v_info},
                            splits=_SPLITS.value, shard_size=_SHARD.value, chunk_units=_CHUNK.value,
                            limit=_LIMIT.value, progress=_PROGRESS.value)
  report = {split: {k: res[k] for k in ("conversations", "written", "rewritten")} for split, res in results.items()}
  print(json.dumps({"out_dir": out_dir, "splits": report}), flush=True)


def run():
  common.run(main)


if __name__ == "__main__":
  run()
