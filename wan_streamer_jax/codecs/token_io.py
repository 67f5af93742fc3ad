"""Codec-token dataset on disk: ArrayRecord shards of msgpack records, resumable writes, Grain reads.

Layout of a token dataset directory (written by `launch/tokenize.py`):

    manifest.json                          codecs (configs, checkpoints), per-split shard lists
    {split}/tokens-00003-of-00010.array_record    one record per conversation
    {split}/tokens-00003-of-00010.done            JSON marker: written only after the shard is complete

A record is a msgpack'd dict (`flax.serialization`) with the fields of
`data_pipelines.token_data` (int32 numpy arrays) plus a few strings:

    video_in, video_out  [units, (H/s) * (W/s)]    (video_in: MISSING where video_in_present is False)
    audio_in, audio_out  [units * 4, Q]
    text_in, text_out    [units, text_slots]
    video_in_present     bool [units]
    num_units            int32
    conversation_id, task, expected_answer (str), answer_unit (int32)

A shard is written to `*.tmp`, fsynced, renamed into place, then its `.done`
marker is written: an interrupted run leaves at most a `.tmp` (ignored and
rewritten), never a truncated shard under its final name.

    source = TokenDataSource(token_dir, "train")      # len(), source[i] -> dict of numpy arrays
    data_pipelines.pipelines.token_pipeline(source, cfg, ...)
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
from flax import serialization


def shard_name(split: str, index: int, count: int) -> str:
  return os.path.join(split, f"tokens-{index:05d}-of-{count:05d}.array_record")


def encode_record(ex: dict) -> bytes:
  return serialization.msgpack_serialize({k: (v if isinstance(v, str) else np.asarray(v)) for k, v in ex.items()})


def decode_record(data: bytes) -> dict:
  out = serialization.msgpack_restore(data)
  return {k: (np.asarray(v) if not isinstance(v, str) else v) for k, v in out.items()}


def shard_done(root: str, rel: str) -> bool:
  return os.path.exists(os.path.join(root, rel[: -len(".array_record")] + ".done"))


def write_shard(root: str, rel: str, records: list[dict], info: dict) -> None:
  """Writes one complete shard atomically (tmp file, fsync, rename), then its `.done` marker."""
  from array_record.python.array_record_module import ArrayRecordWriter
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  for r in records:
    writer.write(encode_record(r))
  writer.close()
  with open(tmp, "rb") as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)
  marker = path[: -len(".array_record")] + ".done"
  with open(marker + ".tmp", "w") as f:
    json.dump({"records": len(records), **info}, f)
  os.replace(marker + ".tmp", marker)


class TokenDataSource:
  """Random access over one split's complete shards (Grain `RandomAccessDataSource` protocol)."""

  def __init__(self, root: str, split: str):
    import grain
    self.root, self.split = root, split
    paths = sorted(glob.glob(os.path.join(root, split, "tokens-*-of-*.array_record")))
    paths = [p for p in paths if os.path.exists(p[: -len(".array_record")] + ".done")]
    if not paths:
      raise ValueError(f"TokenDataSource: expected complete token shards under {os.path.join(root, split)}, "
                       "found none (run launch/tokenize.py)")
    self.paths = paths
    self._src = grain.sources.ArrayRecordDataSource(paths)

  def __len__(self) -> int:
    return len(self._src)

  def __getitem__(self, index: int) -> dict:
    return decode_record(self._src[index])

  def __repr__(self) -> str:
    return f"TokenDataSource({self.root!r}, {self.split!r}, {len(self.paths)} shards, {len(self)} records)"


def read_manifest(root: str) -> dict | None:
  path = os.path.join(root, "manifest.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_manifest(root: str, manifest: dict) -> None:
  os.makedirs(root, exist_ok=True)
  tmp = os.path.join(root, "manifest.json.tmp")
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
  os.replace(tmp, os.path.join(root, "manifest.json"))
