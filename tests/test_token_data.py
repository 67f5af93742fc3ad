"""The token dataset: truncated / corrupted shards are named and rewritten; tokens for another config refused;
resuming a workdir with another config or data source refused; a corpus of other split sizes refused."""

import os

import numpy as np
import pytest

from data_pipelines import token_data
from tests.helpers import tiny_config
from wan_streamer_jax.config import ConfigError

CFG = tiny_config()


def _records(n, seed=0):
  src = token_data.RandomTokenSource(CFG, n, min_units=3, max_units=4, seed=seed)
  return [src[i] for i in range(n)]


class _Corpus:
  """Stands in for a corpus split: tokenising conversation i gives RandomTokenSource's example i."""

  def __init__(self, n):
    self.records = _records(n)
    self.calls = 0

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return {"i": i}

  def tokenize(self, ex):
    self.calls += 1
    return self.records[ex["i"]]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_bad_shard_is_named_and_rewritten(tmp_path, damage):
  root = str(tmp_path / "tokens")
  corpus = _Corpus(5)
  res = token_data.write_split(root, "train", corpus, corpus.tokenize, shard_size=2, progress=False)
  assert res["written"] == 3 and corpus.calls == 5
  bad = os.path.join(root, token_data.shard_name("train", 1, 3))
  size = os.path.getsize(bad)
  with open(bad, "r+b") as f:
    if damage == "truncate":
      f.truncate(size // 2)
    else:
      f.seek(size // 2)
      byte = f.read(1)
      f.seek(size // 2)
      f.write(bytes([byte[0] ^ 0xFF]))
  if damage == "truncate":  # reading names the file instead of a bare reader error
    with pytest.raises(ConfigError, match="tokens-00001-of-00003.array_record.*truncated.*python -m launch.tokenize"):
      token_data.TokenDataSource(root, "train")
  assert "SHA-256" in token_data.verify_shard(root, token_data.shard_name("train", 1, 3)) or damage == "truncate"
  corpus.calls = 0
  res = token_data.write_split(root, "train", corpus, corpus.tokenize, shard_size=2, progress=False)
  assert res["rewritten"] == [token_data.shard_name("train", 1, 3)] and corpus.calls == 2  # only the bad shard
  ds = token_data.TokenDataSource(root, "train")
  assert len(ds) == 5
  for i, want in enumerate(corpus.records):
    for k in ("audio_in", "video_out", "text_in"):
      np.testing.assert_array_equal(ds[i][k], want[k])


def test_unreadable_record_names_its_shard(tmp_path):
  root = str(tmp_path / "tokens")
  corpus = _Corpus(4)
  token_data.write_split(root, "train", corpus, corpus.tokenize, shard_size=2, progress=False)
  ds = token_data.TokenDataSource(root, "train")
  ds._src = _Broken()
  with pytest.raises(ValueError, match=r"token record 3 in .*tokens-00001-of-00002.array_record is unreadable"):
    ds[3]


class _Broken:
  def __len__(self):
    return 4

  def __getitem__(self, i):
    raise RuntimeError("Corrupted Riegeli/records file")


def test_tokens_of_another_config_are_refused_naming_the_difference(tmp_path):
  root = str(tmp_path / "tokens")
  token_data.write_manifest(root, {"config_name": "tiny", "format": token_data.token_format(CFG), "splits": {}})
  token_data.check_tokens_fit(root, CFG)
  other = tiny_config(**{"audio.num_quantizers": 4})
  with pytest.raises(ConfigError, match=r"audio.num_quantizers: tokens 2, config 4.*--allow_mismatch"):
    token_data.check_tokens_fit(root, other)
  token_data.check_tokens_fit(root, other, allow_mismatch=True)
  with pytest.raises(ConfigError, match="TokenDataSource: expected complete token shards.*python -m launch.tokenize"):
    token_data.TokenDataSource(root, "train")


def test_resume_with_another_config_or_data_source_is_refused():
  from types import SimpleNamespace

  from wan_streamer_jax.train.loop import check_resume
  meta = {"kind": "transformer", "config": CFG.to_dict(),
          "data": {"source": "tokens", "token_dir": "/data/a", "split": "train"}}
  task = SimpleNamespace(kind="transformer", cfg=CFG.replace(train=dict(num_steps=99, log_every=7)),
                         data_info=dict(meta["data"]))
  check_resume(meta, task, "runs/x", allow_mismatch=False)  # schedule changes are fine
  task.data_info["token_dir"] = "/data/b"
  with pytest.raises(ConfigError, match=r"data token_dir: '/data/a' -> '/data/b'.*--allow_mismatch"):
    check_resume(meta, task, "runs/x", allow_mismatch=False)
  task.data_info["token_dir"] = "/data/a"
  task.cfg = CFG.replace(model=dict(num_layers=3))
  with pytest.raises(ConfigError, match=r"config model.num_layers: 2 -> 3"):
    check_resume(meta, task, "runs/x", allow_mismatch=False)
  check_resume(meta, task, "runs/x", allow_mismatch=True)
  task.kind = "audio"
  with pytest.raises(ConfigError, match="holds a transformer run; this run trains a audio model"):
    check_resume(meta, task, "runs/x", allow_mismatch=True)


def test_make_dataset_refuses_a_corpus_of_other_split_sizes():
  from types import SimpleNamespace

  from launch.make_dataset import check_existing
  splits = {"train": SimpleNamespace(num_examples=300), "validation": SimpleNamespace(num_examples=100)}
  builder = SimpleNamespace(is_prepared=lambda: True, data_dir="/tfds/small_64x64", info=SimpleNamespace(splits=splits))
  check_existing(builder, {"train": 300, "validation": 100}, reuse=False)
  with pytest.raises(ConfigError, match=r"train: 300 built, 1000 asked.*--reuse_existing"):
    check_existing(builder, {"train": 1000, "validation": 100}, reuse=False)
  check_existing(builder, {"train": 1000, "validation": 100}, reuse=True)
