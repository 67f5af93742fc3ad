"""Codec training and tokenisation pieces: sharded train step learns, checkpoints reload, token shards."""

import os

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from data_pipelines import token_data as token_io
from wan_streamer_jax.codecs import training
from wan_streamer_jax.codecs.synthetic import SyntheticSignalSource
from wan_streamer_jax.config import load_config
from wan_streamer_jax.parallel.mesh import make_mesh
from wan_streamer_jax.config import MeshConfig
from wan_streamer_jax.train.checkpoint import Checkpointer, run_meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cfg():
  return load_config(os.path.join(ROOT, "configs", "codec_audio_tiny.py"))


def test_sharded_train_step_reduces_loss_and_checkpoint_reloads(cfg, tmp_path):
  mesh = make_mesh(MeshConfig(data=2, fsdp=1, tensor=1), jax.devices()[:2])
  codec = training.create_codec(cfg, "audio")
  graphdef, params = nnx.split(codec)
  tx = optax.adam(3e-3)
  rep = training.replicated(mesh)
  params = jax.device_put(params, rep)
  opt = jax.device_put(tx.init(params), rep)
  step = training.make_train_step("audio", cfg, graphdef, tx, mesh, params, opt)
  src = SyntheticSignalSource(cfg, 8, units=2)
  x = np.stack([src[i]["user_audio"] for i in range(8)])
  batch = {"audio": jax.device_put(x, training.batch_sharding(mesh))}
  losses = []
  for _ in range(4):
    params, opt, m = step(params, opt, batch)
    losses.append(float(m["loss"]))
  assert losses[-1] < losses[0], losses
  assert set(m) >= {"l1", "mr_stft", "mel", "grad_norm", "perplexity/q0", "perplexity/q1"}

  ckpt = Checkpointer(str(tmp_path / "checkpoints"))
  ckpt.save(4, params, opt, run_meta("audio", cfg))
  ckpt.close()
  loaded, kind, at = training.load_codec(str(tmp_path))
  assert (kind, at) == ("audio", 4)
  trained = nnx.merge(graphdef, jax.device_get(params))
  np.testing.assert_array_equal(loaded.encode(x[:2]), trained.encode(x[:2]))


def test_token_shards_roundtrip_and_resume_markers(tmp_path, cfg):
  import functools
  audio = training.create_codec(cfg, "audio")
  video = training.create_codec(cfg, "video")
  src = SyntheticSignalSource(cfg, 3, units=5)
  conv = dict(src[0], user_text=np.zeros((5, cfg.text.text_slots), np.int32),
              model_text=np.ones((5, cfg.text.text_slots), np.int32), conversation_id=b"c0")
  conv["user_camera_on"] = np.array([1, 1, 0, 0, 1], bool)
  (afns, ap), (vfns, vp) = audio.functional(), video.functional()
  ex = token_io.tokenize_conversation(conv, cfg, functools.partial(afns.encode_chunked, ap, chunk_units=2),
                                      functools.partial(vfns.encode_chunked, vp, chunk_units=2))
  # Chunked encoding (2-unit chunks, padded tail) == offline encoding of the whole conversation.
  np.testing.assert_array_equal(ex["audio_in"], np.asarray(audio.encode(conv["user_audio"][None]))[0])
  np.testing.assert_array_equal(ex["video_out"], np.asarray(video.encode(conv["model_video"][None]))[0].reshape(5, -1))
  assert ex["video_in"].shape == (5, cfg.video.tokens_per_unit) and ex["audio_out"].shape == (20, 2)
  assert (ex["video_in"][2:4] == cfg.video.missing_id).all() and ex["conversation_id"] == "c0"

  root = str(tmp_path / "tokens")
  rel = token_io.shard_name("train", 0, 1)
  assert not token_io.shard_done(root, rel)
  with pytest.raises(ValueError, match="found none"):
    token_io.TokenDataSource(root, "train")
  token_io.write_shard(root, rel, [ex, ex], {"split": "train"})
  assert token_io.shard_done(root, rel)
  open(os.path.join(root, "train", "tokens-00001-of-00002.array_record.tmp"), "wb").write(b"partial")
  ds = token_io.TokenDataSource(root, "train")
  assert len(ds) == 2
  back = ds[1]
  for k in ("audio_in", "video_in", "text_out", "video_in_present"):
    np.testing.assert_array_equal(back[k], ex[k])
  assert back["conversation_id"] == "c0" and int(back["num_units"]) == 5


def test_tokenize_corpus_writes_every_split_and_refuses_tokens_of_other_codecs(tmp_path, cfg):
  from data_pipelines.tokenize_corpus import tokenize_corpus
  from wan_streamer_jax.config import ConfigError
  src = SyntheticSignalSource(cfg, 3, units=5)

  def conv(i):
    return dict(src[i], user_text=np.zeros((5, cfg.text.text_slots), np.int32),
                model_text=np.ones((5, cfg.text.text_slots), np.int32), conversation_id=f"c{i}".encode(),
                user_camera_on=np.ones(5, bool))

  class Builder:
    def as_data_source(self, split):
      return [conv(i) for i in range({"train": 3, "validation": 1}[split])]

  audio, video = training.create_codec(cfg, "audio"), training.create_codec(cfg, "video")
  info = {"audio": {"checkpoint": "random"}, "video": {"checkpoint": "random"}}
  root = str(tmp_path / "tokens")
  res = tokenize_corpus(root, cfg, Builder(), audio, video, info, splits=("train", "validation"), shard_size=2,
                        chunk_units=2, progress=False)
  assert {k: v["conversations"] for k, v in res.items()} == {"train": 3, "validation": 1}
  manifest = token_io.read_manifest(root)
  assert manifest["codecs"]["audio"]["config"]["sample_rate"] == cfg.audio.sample_rate
  assert manifest["splits"]["train"]["shards"] == [token_io.shard_name("train", i, 2) for i in range(2)]
  assert len(token_io.TokenDataSource(root, "train")) == 3
  again = tokenize_corpus(root, cfg, Builder(), audio, video, info, splits=("train",), shard_size=2,
                          chunk_units=2, progress=False)
  assert again["train"]["written"] == 0  # finished shards are kept
  other = {"audio": {"checkpoint": "/runs/other_audio", "step": 7}, "video": info["video"]}
  with pytest.raises(ConfigError, match="holds tokens of other codecs"):
    tokenize_corpus(root, cfg, Builder(), audio, video, other, splits=("train",), progress=False)
