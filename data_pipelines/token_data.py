"""The codec-token dataset: one record format, written by `python -m launch.tokenize`, read by the token pipeline.

A token example (one per conversation of `units` units) is a dict of numpy arrays:

  video_in, video_out   int32 [units, (H/s) * (W/s)]   one latent frame per unit, row-major grid
                                                       (video_in: MISSING where video_in_present is False)
  audio_in, audio_out   int32 [units * 4, Q]           25 Hz codec frames, Q residual levels
  text_in, text_out     int32 [units, text_slots]      byte tokens + PAD/WORD_END/END_OF_TURN/MISSING
  video_in_present      bool  [units]                  the user's camera was on
  num_units             int32 scalar
  conversation_id, task, expected_answer   str         (optional metadata)
  answer_unit           int32 scalar                   (optional; -1 = none)
  heard_text            int32 [units, text_slots]      (optional) the user's spoken words as heard
                                                       (`text_slots.heard_events`; PAD elsewhere): the
                                                       text_in targets of `loss.text_in_target="heard"`

Out streams hold the model's tokens *of that unit* (not yet shifted; the
pipeline shifts them). On disk (a token directory):

    manifest.json                                   config of the tokens (codec configs + checkpoints, text
                                                    slots), per-split shard lists
    {split}/tokens-00003-of-00010.array_record      one msgpack record per conversation
    {split}/tokens-00003-of-00010.done              JSON marker {"records", "bytes", "sha256", ...}

A shard is written to `*.tmp`, fsynced, renamed into place, then its `.done`
marker (with the shard's size and SHA-256) is written: an interrupted run
leaves at most a `.tmp`, never a shard under its final name without a marker.
`verify_shard` checks a shard against its marker (tokenize re-verifies and
rewrites bad shards); `TokenDataSource` checks sizes at open and names the
file of any record it cannot read.

`RandomTokenSource` makes such examples from random tokens (tests, benchmarks).
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
from flax import serialization

from data_pipelines import text_slots
from wan_streamer_jax.checksums import file_sha256
from wan_streamer_jax.config import AUDIO_FRAMES_PER_UNIT, Config, ConfigError

STREAMS = ("video_in", "audio_in", "text_in", "video_out", "audio_out", "text_out")
METADATA = ("conversation_id", "task", "expected_answer", "answer_unit")
# Codec-config fields that fix the token format (shapes and vocabularies) of each kind.
FORMAT_FIELDS = {"audio": ("sample_rate", "num_quantizers", "levels"),
                 "video": ("height", "width", "spatial_stride", "levels")}


def token_example_spec(cfg: Config, units: int | None = None) -> dict:
  """Key -> (shape, dtype) of a token example's arrays (`None` for the variable unit count)."""
  u = units
  v, q, s = cfg.video.tokens_per_unit, cfg.audio.num_quantizers, cfg.text.text_slots
  fr = None if u is None else u * AUDIO_FRAMES_PER_UNIT
  return {
      "video_in": ((u, v), np.int32), "video_out": ((u, v), np.int32),
      "audio_in": ((fr, q), np.int32), "audio_out": ((fr, q), np.int32),
      "text_in": ((u, s), np.int32), "text_out": ((u, s), np.int32),
      "video_in_present": ((u,), np.bool_), "num_units": ((), np.int32),
  }


def check_example(cfg: Config, ex: dict, where: str = "token example") -> None:
  """Raises a ValueError naming the field, the expected shape/dtype and what `ex` holds."""
  units = int(ex["num_units"])
  for key, (shape, dtype) in token_example_spec(cfg, units).items():
    if key not in ex:
      raise ValueError(f"{where}: missing field {key!r} (has {sorted(ex)})")
    a = np.asarray(ex[key])
    if a.shape != shape or a.dtype != dtype:
      raise ValueError(f"{where}: field {key!r} expected {np.dtype(dtype).name} {shape} for {units} units of "
                       f"config {cfg.name!r}, got {a.dtype.name} {a.shape}")
  if "heard_text" in ex:
    shape, dtype = (units, cfg.text.text_slots), np.int32
    a = np.asarray(ex["heard_text"])
    if a.shape != shape or a.dtype != dtype:
      raise ValueError(f"{where}: field 'heard_text' expected int32 {shape} for {units} units of "
                       f"config {cfg.name!r}, got {a.dtype.name} {a.shape}")


def encode_record(ex: dict) -> bytes:
  return serialization.msgpack_serialize({k: (v if isinstance(v, str) else np.asarray(v)) for k, v in ex.items()})


def decode_record(data: bytes) -> dict:
  out = serialization.msgpack_restore(data)
  return {k: (np.asarray(v) if not isinstance(v, str) else v) for k, v in out.items()}


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


# --- tokenising a conversation --------------------------------------------------------------------------

def tokenize_conversation(ex: dict, cfg: Config, encode_audio, encode_video) -> dict:
  """Corpus conversation (`data_pipelines.corpus` fields) -> token example.

  `encode_audio(wave [1, samples] float32) -> [1, units * 4, Q]` and
  `encode_video(frames [1, units * 4, H, W, 3] uint8) -> [1, units, h, w]`
  (e.g. `functools.partial(fns.encode_chunked, params)` of each codec).
  """
  units = int(ex["num_units"])
  out = {"num_units": np.int32(units)}
  for role, src in (("in", "user"), ("out", "model")):
    wave = np.asarray(ex[f"{src}_audio"], np.float32)[None, : units * cfg.audio.samples_per_unit]
    out[f"audio_{role}"] = np.asarray(encode_audio(wave))[0].astype(np.int32)
    frames = np.asarray(ex[f"{src}_video"], np.uint8)[None, : units * 4]
    out[f"video_{role}"] = np.asarray(encode_video(frames))[0].reshape(units, -1).astype(np.int32)
    out[f"text_{role}"] = np.asarray(ex[f"{src}_text"], np.int32)[:units]
  present = np.asarray(ex["user_camera_on"], bool)[:units]
  out["video_in"] = np.where(present[:, None], out["video_in"], cfg.video.missing_id).astype(np.int32)
  out["video_in_present"] = present
  for key in ("conversation_id", "task", "expected_answer"):
    val = ex.get(key, b"")
    out[key] = val.decode() if isinstance(val, bytes) else str(val)
  out["answer_unit"] = np.int32(ex.get("answer_unit", -1))
  meta = ex.get("metadata")
  turns = json.loads(meta.decode() if isinstance(meta, bytes) else str(meta)).get("turns") if meta else None
  if turns is not None:  # the synthetic corpus' timeline (recorded conversations have none)
    out["heard_text"] = text_slots.layout_text(text_slots.heard_events(turns), units, cfg.text.text_slots)[0]
  check_example(cfg, out, f"tokenized conversation {out['conversation_id']!r}")
  return out


# --- shards -------------------------------------------------------------------------------------------

def shard_name(split: str, index: int, count: int) -> str:
  return os.path.join(split, f"tokens-{index:05d}-of-{count:05d}.array_record")


def _marker(path: str) -> str:
  return path[: -len(".array_record")] + ".done"


def read_marker(root: str, rel: str) -> dict | None:
  try:
    with open(_marker(os.path.join(root, rel))) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def shard_done(root: str, rel: str) -> bool:
  """The shard's `.done` marker exists (see `verify_shard` for its contents)."""
  return os.path.exists(_marker(os.path.join(root, rel)))


def verify_shard(root: str, rel: str) -> str | None:
  """None if shard `rel` matches its `.done` marker (size, SHA-256, record count), else why not."""
  path = os.path.join(root, rel)
  marker = read_marker(root, rel)
  if marker is None:
    return "no (readable) .done marker"
  if not os.path.exists(path):
    return "the shard file is missing"
  size = os.path.getsize(path)
  if "bytes" in marker and size != marker["bytes"]:
    return f"{size} bytes on disk, {marker['bytes']} when written (truncated or overwritten)"
  if "sha256" in marker and file_sha256(path) != marker["sha256"]:
    return "its SHA-256 differs from the one recorded when it was written (corrupted)"
  if "sha256" not in marker:
    return "its marker predates checksums"
  return None


def write_shard(root: str, rel: str, records: list[dict], info: dict) -> None:
  """Writes one complete shard atomically (tmp file, fsync, rename), then its `.done` marker."""
  from array_record.python.array_record_module import ArrayRecordWriter
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if os.path.exists(_marker(path)):
    os.remove(_marker(path))  # a shard being rewritten is not done until its new marker exists
  tmp = path + ".tmp"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  for r in records:
    writer.write(encode_record(r))
  writer.close()
  with open(tmp, "rb") as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)
  marker = _marker(path)
  with open(marker + ".tmp", "w") as f:
    json.dump({"records": len(records), "bytes": os.path.getsize(path), "sha256": file_sha256(path), **info}, f)
  os.replace(marker + ".tmp", marker)


class TokenDataSource:
  """Random access over one split's complete shards (Grain `RandomAccessDataSource` protocol).

  Shards without a `.done` marker are ignored; a shard whose size differs from
  its marker is refused at open, and a record that cannot be read raises an
  error naming its shard file (re-run `python -m launch.tokenize` to repair).
  """

  def __init__(self, root: str, split: str):
    import grain
    self.root, self.split = root, split
    paths = sorted(glob.glob(os.path.join(root, split, "tokens-*-of-*.array_record")))
    paths = [p for p in paths if os.path.exists(_marker(p))]
    if not paths:
      raise ConfigError(f"TokenDataSource: expected complete token shards under {os.path.join(root, split)}, "
                        "found none (write them with: python -m launch.tokenize ...)")
    counts = []
    for p in paths:
      marker = read_marker(root, os.path.relpath(p, root)) or {}
      if "bytes" in marker and os.path.getsize(p) != marker["bytes"]:
        raise ConfigError(f"token shard {p} has {os.path.getsize(p)} bytes, {marker['bytes']} when written "
                          "(truncated): re-run python -m launch.tokenize with the same flags to rewrite it")
      counts.append(marker.get("records"))
    self.paths = paths
    self._src = grain.sources.ArrayRecordDataSource(paths)
    self._ends = np.cumsum(counts) if all(c is not None for c in counts) else None

  def __len__(self) -> int:
    return len(self._src)

  def shard_of(self, index: int) -> str:
    if self._ends is None:
      return f"one of {len(self.paths)} shards in {os.path.join(self.root, self.split)}"
    return self.paths[int(np.searchsorted(self._ends, index, side="right"))]

  def __getitem__(self, index: int) -> dict:
    try:
      return decode_record(self._src[index])
    except Exception as e:  # noqa: BLE001 -- name the file, whatever the reader's error
      raise ValueError(f"token record {index} in {self.shard_of(index)} is unreadable ({e}); re-run "
                       "python -m launch.tokenize with the same flags to verify and rewrite bad shards") from e

  def __repr__(self) -> str:
    return f"TokenDataSource({self.root!r}, {self.split!r}, {len(self.paths)} shards, {len(self)} records)"


# --- manifest -----------------------------------------------------------------------------------------

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


def has_split(root: str, split: str) -> bool:
  return bool(glob.glob(os.path.join(root, split, "tokens-*-of-*.done")))


def token_format(cfg: Config) -> dict:
  """What fixes the token layout of `cfg`: the codec format fields and the text slots."""
  out = {kind: {k: getattr(getattr(cfg, kind), k) for k in keys} for kind, keys in FORMAT_FIELDS.items()}
  out["text"] = {"text_slots": cfg.text.text_slots}
  return json.loads(json.dumps(out))


def check_tokens_fit(root: str, cfg: Config, *, allow_mismatch: bool = False) -> None:
  """Refuses (ConfigError) tokens built for another token format than `cfg`'s, naming what differs."""
  manifest = read_manifest(root)
  if manifest is None:
    raise ConfigError(f"{root}: no manifest.json (not a token directory written by python -m launch.tokenize)")
  saved = manifest.get("format")
  if saved is None and "codecs" in manifest:  # manifests before `format`: the codec configs
    saved = {kind: {k: manifest["codecs"][kind]["config"].get(k) for k in keys}
             for kind, keys in FORMAT_FIELDS.items()}
  want = token_format(cfg)
  diffs = [f"{kind}.{k}: tokens {saved.get(kind, {}).get(k)!r}, config {v!r}"
           for kind in want for k, v in want[kind].items()
           if kind in saved and saved[kind].get(k) != v]
  if diffs:
    msg = (f"tokens in {root} were built for config {manifest.get('config_name')!r}, whose token format "
           f"differs from {cfg.name!r}: {'; '.join(diffs)}")
    if not allow_mismatch:
      raise ConfigError(msg + ". Tokenise for this config (python -m launch.tokenize --config=...) or pass "
                        "--allow_mismatch")
    from absl import logging
    logging.warning("%s (--allow_mismatch)", msg)


def write_split(out_dir: str, split: str, source, tokenize, *, shard_size: int = 64,
                limit: int | None = None, progress: bool = True) -> dict:
  """Tokenises `source` (corpus conversations) into `split`'s shards, resumably.

  Shard `i` holds conversations `[i*S, (i+1)*S)`. A shard whose marker and
  checksum match is kept; a missing, unfinished, truncated or corrupted one is
  (re)written, and each bad one is named in a warning. `tokenize(ex) -> record`.
  Returns `{"conversations", "shards", "written", "rewritten"}`.
  """
  from absl import logging
  from tqdm import tqdm
  n = len(source) if limit is None else min(len(source), limit)
  count = -(-n // shard_size)
  shards = [shard_name(split, i, count) for i in range(count)]
  todo, bad = [], []
  for i, rel in enumerate(shards):
    why = verify_shard(out_dir, rel) if shard_done(out_dir, rel) else "not written yet"
    if why is not None:
      todo.append(i)
      if shard_done(out_dir, rel):
        bad.append(rel)
        logging.warning("token shard %s: %s; rewriting it", os.path.join(out_dir, rel), why)
  logging.info("%s: %d conversations, %d shards, %d to write (%d bad)", split, n, count, len(todo), len(bad))
  bar = tqdm(total=sum(min(n, (i + 1) * shard_size) - i * shard_size for i in todo), desc=split,
             disable=not progress)
  for i in todo:
    records = []
    for j in range(i * shard_size, min(n, (i + 1) * shard_size)):
      records.append(tokenize(source[j]))
      bar.update(1)
    write_shard(out_dir, shards[i], records, {"split": split, "first": i * shard_size})
  bar.close()
  return {"conversations": n, "shards": shards, "written": len(todo), "rewritten": bad}
