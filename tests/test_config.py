"""Configs: every named config parses and validates; bad values fail with clear errors."""

import glob
import os

import pytest

from tests.helpers import ROOT, tiny_config
from wan_streamer_jax import schedule
from wan_streamer_jax.config import Config, MeshConfig, ModelConfig, VideoCodecConfig, load_config


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))))
def test_every_config_file_parses(path):
  if os.path.basename(path) == "__init__.py":
    return
  cfg = load_config(path)
  assert isinstance(cfg, Config)
  assert Config.from_dict(cfg.to_dict()) == cfg


def test_overrides_are_typed_and_validated():
  cfg = tiny_config(**{"model.num_layers": 3})
  assert cfg.model.num_layers == 3
  with pytest.raises(ValueError, match=r"model.num_heads.*multiple of model.num_kv_heads=3"):
    tiny_config(**{"model.num_kv_heads": 3})


def test_validation_messages_name_field_and_numbers():
  with pytest.raises(ValueError, match=r"video.height.*spatial_stride=8.*20"):
    VideoCodecConfig(height=20, width=16, spatial_stride=8)
  with pytest.raises(ValueError, match=r"mesh.*device count 8.*\(2, 2, 1\).*product 4"):
    MeshConfig(data=2, fsdp=2, tensor=1).shape(8)
  assert MeshConfig(data=2, fsdp=-1, tensor=2).shape(8) == (2, 2, 2)
  with pytest.raises(ValueError, match="rope_sections"):
    ModelConfig(head_dim=16, rope_sections=(8, 8, 8))
  with pytest.raises(ValueError, match="unknown|only the fields"):
    Config.from_dict({"model": {"num_layerz": 2}})


def test_unit_layout_matches_codec_configs():
  cfg = load_config(os.path.join(ROOT, "configs", "small.py"))
  lay = schedule.unit_layout(cfg)
  assert lay.describe() == {"video_in": 64, "audio_in": 16, "text_in": 8,
                            "video_out": 64, "audio_out": 16, "text_out": 8}
  # audio: frame-major, level-minor; ticks = frame index; video at tick 0 with its grid position.
  a = lay.group_slices["audio_in"]
  assert list(lay.level[a][:8]) == [0, 1, 2, 3, 0, 1, 2, 3]
  assert list(lay.tick[a][::4]) == [0, 1, 2, 3]
  v = lay.group_slices["video_out"]
  assert lay.h[v].max() == 7 and lay.w[v].max() == 7 and (lay.role[v] == 1).all()
  tiled = lay.tile(3)
  pos = tiled.positions()
  assert pos.shape == (3 * 176, 3)
  assert pos[176 + a.start, 0] == 4  # unit 1, first audio frame -> tick 4


def test_next_unit_targets_respect_segments():
  import jax.numpy as jnp
  import numpy as np
  L = 2
  tokens = jnp.arange(8)[None].astype(jnp.int32)
  seg = jnp.asarray([[1, 1, 1, 1, 2, 2, 0, 0]], jnp.int32)
  tgt, valid = schedule.next_unit_targets(tokens, seg, L)
  np.testing.assert_array_equal(tgt[0, :4], [2, 3, 4, 5])
  np.testing.assert_array_equal(valid[0], [True, True, False, False, False, False, False, False])


def test_bad_batches_fail_before_compile_naming_the_field():
  import numpy as np
  from wan_streamer_jax.train.feed import check_batch
  from wan_streamer_jax.train.random_data import random_token_batch
  cfg = tiny_config()
  good = random_token_batch(cfg, 0)
  check_batch(cfg, good)
  with pytest.raises(ValueError, match=r"batch\['tokens'\]: expected shape \(4, 256\).*got \(4, 255\)"):
    check_batch(cfg, {**good, "tokens": good["tokens"][:, :-1]})
  with pytest.raises(ValueError, match=r"batch\['unit_ids'\]: expected dtype int32, got int64"):
    check_batch(cfg, {**good, "unit_ids": good["unit_ids"].astype(np.int64)})
  bad = good["tokens"].copy()
  bad[1, 12] = 300  # slot 12 of unit 0 is text_in: vocabulary 260
  with pytest.raises(ValueError, match=r"text ids in \[0, 260\) at row 1 position 12, got 300"):
    check_batch(cfg, {**good, "tokens": bad})
  with pytest.raises(ValueError, match=r"missing \['segment_ids'\]"):
    check_batch(cfg, {"tokens": good["tokens"], "unit_ids": good["unit_ids"]})


def test_default_mesh_uses_every_device_and_checks_the_batch():
  assert MeshConfig().shape(1, 4) == (1, 1, 1)
  assert MeshConfig().shape(8, 8) == (8, 1, 1)
  assert MeshConfig().shape(8, 4) == (4, 1, 2)  # the batch of 4 takes 4 devices, tensor the other 2
  assert MeshConfig(fsdp=2).shape(8, 4) == (2, 2, 2)
  with pytest.raises(ValueError, match=r"train.batch_size.*data\*fsdp = 8\*1 = 8.*got 4"):
    MeshConfig(data=8).shape(8, 4)
  with pytest.raises(ValueError, match=r"train.batch_size.*data\*fsdp = 4\*1 = 4.*got 6"):
    MeshConfig(data=-1, tensor=2).shape(8, 6)


def test_codec_run_settings_live_in_codec_train_and_old_configs_still_load():
  from wan_streamer_jax.codecs.training import codec_kind
  from wan_streamer_jax.config import ConfigError
  cfg = load_config("codec_video_tiny")  # a shipped config by name
  assert codec_kind(cfg) == "video" and cfg.codec_train.ssim_weight == 0.1
  with pytest.raises(ConfigError, match=r"codec_train.kind"):
    codec_kind(tiny_config())
  with pytest.raises(ValueError, match=r"codec_train.role"):
    tiny_config(**{"codec_train.role": "both"})
  # a config saved before codec_train existed (loss weights inside the codec format sections)
  old = tiny_config().to_dict()
  del old["codec_train"]
  old["name"] = "codec_audio_small"
  old["audio"].update(l1_weight=2.0, stft_weight=3.0, mel_weight=4.0)
  old["video"].update(l1_weight=1.0, l2_weight=1.0, ssim_weight=0.1)
  ct = Config.from_dict(old).codec_train
  assert (ct.l1_weight, ct.stft_weight, ct.mel_weight, ct.ssim_weight) == (2.0, 3.0, 4.0, 0.1)
