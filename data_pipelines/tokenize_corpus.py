"""A corpus through trained codecs into a token directory (`token_data`'s format): the one tokenising routine.

    res = tokenize_corpus(out_dir, cfg, builder, audio_codec, video_codec,
                          codec_info={"audio": {"checkpoint": ..., "step": ...}, "video": {...}})

Used by `python -m launch.tokenize` and the demo's tokens stage. The manifest
pins the codecs (info + config): tokenising into a directory that holds tokens
of other codecs is refused before anything is written. Conversations are
encoded with each codec's chunked encoder (`CodecFns.encode_chunked`: fixed
chunks of `chunk_units` units, streaming state carried, one compile); shards are
written resumably (`token_data.write_split`).
"""

from __future__ import annotations

import dataclasses
import functools
import json

from data_pipelines import token_data
from wan_streamer_jax.config import Config, ConfigError


def _plain(dc) -> dict:
  return json.loads(json.dumps(dataclasses.asdict(dc)))


def tokenize_corpus(out_dir: str, cfg: Config, builder, audio, video, codec_info: dict, *,
                    splits=("train", "validation", "test"), shard_size: int = 64, chunk_units: int = 16,
                    limit: int | None = None, progress: bool = True) -> dict:
  """Writes `splits` of `builder`'s corpus as tokens of `audio` / `video` (codec modules) under `out_dir`.

  `codec_info[kind]`: JSON-able description of each codec (checkpoint path, step) kept in the
  manifest. Returns `{split: write_split's result}`.
  """
  codecs = {kind: {**codec_info[kind], "config": _plain(codec.cfg)}
            for kind, codec in (("audio", audio), ("video", video))}
  manifest = token_data.read_manifest(out_dir) or {"codecs": codecs, "splits": {}, "config_name": cfg.name,
                                                   "format": token_data.token_format(cfg)}
  if json.dumps(manifest["codecs"], sort_keys=True) != json.dumps(codecs, sort_keys=True):
    raise ConfigError(f"{out_dir} holds tokens of other codecs ({manifest['codecs']}); use another --out_dir")
  manifest.setdefault("format", token_data.token_format(cfg))
  token_data.write_manifest(out_dir, manifest)
  (afns, ap), (vfns, vp) = audio.functional(), video.functional()
  tokenize = functools.partial(token_data.tokenize_conversation, cfg=cfg,
                               encode_audio=functools.partial(afns.encode_chunked, ap, chunk_units=chunk_units),
                               encode_video=functools.partial(vfns.encode_chunked, vp, chunk_units=chunk_units))
  out = {}
  for split in splits:
    res = token_data.write_split(out_dir, split, builder.as_data_source(split), tokenize,
                                 shard_size=shard_size, limit=limit, progress=progress)
    manifest["splits"][split] = {"conversations": res["conversations"], "shards": res["shards"]}
    token_data.write_manifest(out_dir, manifest)
    out[split] = res
  return out
