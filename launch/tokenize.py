"""Tokenise a corpus split with trained codecs into the Transformer's token dataset.

    python -m launch.tokenize --config=configs/small.py --data_dir=DATA \
        --audio_codec=runs/codec_audio_small --video_codec=runs/codec_video_small \
        --out_dir=DATA/tokens_small [--splits=train,validation,test]

Per conversation it writes (see `wan_streamer_jax/codecs/token_io.py`): video
codes `[units, H/s * W/s]` (user -> video_in, avatar -> video_out), audio codes
`[units * 4, Q]` (audio_in, audio_out), the text slots copied, `video_in_present`
(the user's camera) and a few metadata strings. Conversations are encoded in
fixed chunks of `--chunk_units` units with the streaming state carried (one
compile per codec; equal to the offline call by the codecs' causality).

Resumable: shard `i` of a split holds conversations `[i*S, (i+1)*S)`; a shard
with its `.done` marker is skipped on restart, an unfinished one is rewritten
(its `.tmp` is never read). The manifest pins the codec checkpoints: a restart
with other codecs into the same `--out_dir` is refused.
`--audio_codec=random` / `--video_codec=random` use untrained codecs (smoke tests).
Run it as a module (`python -m launch.tokenize`): as a script its name would
shadow the standard library's `tokenize`.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/small.py", "Model config (codec sections).")
_AUDIO = flags.DEFINE_string("audio_codec", None, "train_codec workdir of the audio codec, or 'random'.")
_VIDEO = flags.DEFINE_string("video_codec", None, "train_codec workdir of the video codec, or 'random'.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir of the corpus.")
_SIZE = flags.DEFINE_enum("corpus_size", "small", ["tiny", "small", "full"], "Corpus size.")
_SPLITS = flags.DEFINE_list("splits", ["train", "validation", "test"], "Splits to tokenise.")
_OUT = flags.DEFINE_string("out_dir", None, "Token dataset directory.")
_SHARD = flags.DEFINE_integer("shard_size", 64, "Conversations per shard.")
_CHUNK = flags.DEFINE_integer("chunk_units", 16, "Units encoded per jitted call (state carried).")
_LIMIT = flags.DEFINE_integer("max_conversations", None, "Only the first N conversations of each split.")

# Token fields whose shapes must agree with the model config (checked against the codec's config).
_AUDIO_KEYS = ("sample_rate", "num_quantizers", "levels")
_VIDEO_KEYS = ("height", "width", "spatial_stride", "levels")


def _codec(kind: str, spec: str, cfg):
  from wan_streamer_jax.codecs import training
  if spec == "random":
    return training.create_codec(cfg, kind, seed=0), {"checkpoint": "random"}
  codec, got_kind, step = training.load_codec(spec)
  if got_kind != kind:
    raise ValueError(f"--{kind}_codec: expected a {kind} codec run, received a {got_kind} codec at {spec}")
  want = training.codec_config(cfg, kind)
  for key in (_AUDIO_KEYS if kind == "audio" else _VIDEO_KEYS):
    if getattr(codec.cfg, key) != getattr(want, key):
      raise ValueError(f"--{kind}_codec: the model config needs {kind}.{key}={getattr(want, key)!r}, "
                       f"the codec at {spec} has {getattr(codec.cfg, key)!r}")
  return codec, {"checkpoint": os.path.abspath(spec), "step": int(step)}


class ChunkEncoder:
  """Whole-conversation encoding in fixed chunks of `chunk` units through one jitted step."""

  def __init__(self, codec, chunk: int, unit_len: int):
    import jax
    self.fns, self.params = codec.functional()
    self.chunk, self.unit_len = chunk, unit_len
    self._step = jax.jit(lambda p, s, x: _encode_chunk(self.fns, p, s, x))

  def __call__(self, x):
    """x `[1, units * unit_len, ...]` -> codes for those units (the padded tail is dropped)."""
    import numpy as np
    total = x.shape[1]
    step_len = self.chunk * self.unit_len
    pad = (-total) % step_len
    if pad:  # causal: padding after the end never changes earlier codes
      x = np.concatenate([x, np.zeros((1, pad, *x.shape[2:]), x.dtype)], axis=1)
    state, outs = self.fns.init_state(1), []
    for i in range(x.shape[1] // step_len):
      state, codes = self._step(self.params, state, x[:, i * step_len:(i + 1) * step_len])
      outs.append(np.asarray(codes))
    codes = np.concatenate(outs, axis=1)
    per_unit = codes.shape[1] // (x.shape[1] // self.unit_len)
    return codes[:, : (total // self.unit_len) * per_unit]


def _encode_chunk(fns, params, state, x):
  from flax import nnx
  from wan_streamer_jax.codecs.base import CodecState
  model = nnx.merge(fns.graphdef, params)
  codes, enc = model.encode_chunk(x, state.encoder)
  return CodecState(enc, state.decoder), codes


def tokenize_conversation(ex: dict, cfg, audio_enc: ChunkEncoder, video_enc: ChunkEncoder) -> dict:
  import numpy as np
  units = int(ex["num_units"])
  out = {"num_units": np.int32(units)}
  for role, src in (("in", "user"), ("out", "model")):
    wave = np.asarray(ex[f"{src}_audio"], np.float32)[None, : units * cfg.audio.samples_per_unit]
    out[f"audio_{role}"] = audio_enc(wave)[0].astype(np.int32)  # [units*4, Q]
    frames = np.asarray(ex[f"{src}_video"], np.uint8)[None, : units * 4]
    v = video_enc(frames)[0]  # [units, h, w]
    out[f"video_{role}"] = v.reshape(units, -1).astype(np.int32)
    out[f"text_{role}"] = np.asarray(ex[f"{src}_text"], np.int32)[:units]
  present = np.asarray(ex["user_camera_on"], bool)[:units]
  out["video_in"] = np.where(present[:, None], out["video_in"], cfg.video.missing_id).astype(np.int32)
  out["video_in_present"] = present
  for key in ("conversation_id", "task", "expected_answer"):
    val = ex.get(key, b"")
    out[key] = val.decode() if isinstance(val, bytes) else str(val)
  out["answer_unit"] = np.int32(ex.get("answer_unit", -1))
  return out


def main(argv):
  del argv
  from tqdm import tqdm
  from data_pipelines.synthetic_builder import make_synthetic_builder
  from wan_streamer_jax.codecs import token_io
  from wan_streamer_jax.config import Config

  cfg = Config.from_dict(_CONFIG.value)
  if not (_AUDIO.value and _VIDEO.value and _OUT.value):
    raise ValueError("--audio_codec, --video_codec and --out_dir are required")
  out_dir = os.path.abspath(os.path.expanduser(_OUT.value))
  audio, a_info = _codec("audio", _AUDIO.value, cfg)
  video, v_info = _codec("video", _VIDEO.value, cfg)
  codecs = {"audio": {**a_info, "config": _plain(audio.cfg)}, "video": {**v_info, "config": _plain(video.cfg)}}
  manifest = token_io.read_manifest(out_dir) or {"codecs": codecs, "splits": {}, "config_name": cfg.name}
  if json.dumps(manifest["codecs"], sort_keys=True) != json.dumps(codecs, sort_keys=True):
    raise ValueError(f"{out_dir} holds tokens of other codecs ({manifest['codecs']}); use another --out_dir")
  token_io.write_manifest(out_dir, manifest)

  builder = make_synthetic_builder(cfg, _SIZE.value, data_dir=_DATA_DIR.value)
  if not builder.is_prepared():
    raise ValueError(f"no {_SIZE.value} corpus for {cfg.name} under {builder.data_dir} (run launch.make_dataset)")
  audio_enc = ChunkEncoder(audio, _CHUNK.value, cfg.audio.samples_per_unit)
  video_enc = ChunkEncoder(video, _CHUNK.value, 4)
  for split in _SPLITS.value:
    src = builder.as_data_source(split)
    n = len(src) if _LIMIT.value is None else min(len(src), _LIMIT.value)
    count = -(-n // _SHARD.value)
    shards = [token_io.shard_name(split, i, count) for i in range(count)]
    todo = [i for i, rel in enumerate(shards) if not token_io.shard_done(out_dir, rel)]
    logging.info("%s: %d conversations, %d shards, %d to write", split, n, count, len(todo))
    t0 = time.perf_counter()
    bar = tqdm(total=sum(min(n, (i + 1) * _SHARD.value) - i * _SHARD.value for i in todo), desc=split)
    for i in todo:
      records = []
      for j in range(i * _SHARD.value, min(n, (i + 1) * _SHARD.value)):
        records.append(tokenize_conversation(src[j], cfg, audio_enc, video_enc))
        bar.update(1)
      token_io.write_shard(out_dir, shards[i], records, {"split": split, "first": i * _SHARD.value})
    bar.close()
    manifest["splits"][split] = {"conversations": n, "shards": shards}
    token_io.write_manifest(out_dir, manifest)
    logging.info("%s done in %.1fs", split, time.perf_counter() - t0)
  print(json.dumps({"out_dir": out_dir, "splits": {s: manifest["splits"][s]["conversations"]
                                                   for s in _SPLITS.value}}), flush=True)


def _plain(dc) -> dict:
  import dataclasses
  return json.loads(json.dumps(dataclasses.asdict(dc)))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
