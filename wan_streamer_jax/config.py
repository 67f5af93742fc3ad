"""Typed configuration: the single source of truth for every run.

Configs are frozen dataclasses, validated on construction. Named configs live
in `configs/*.py` as `get_config() -> ml_collections.ConfigDict` (so absl's
`--config.model.num_layers=4` overrides work); `Config.from_dict` turns that
dict back into the typed, validated `Config` the library consumes.

Sections by concept: `codec_config` (token formats and codec architectures:
video, audio, text), `run_config` (mesh, optimizer, loss weights, schedule,
codec training), the model here. Every name stays importable from this module.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from wan_streamer_jax.codec_config import AudioCodecConfig, TextConfig, VideoCodecConfig
from wan_streamer_jax.config_base import (AUDIO_FRAMES_PER_UNIT, FRAMES_PER_UNIT, GROUPS, KINDS, ROLES,
                                          TICKS_PER_UNIT, UNIT_SECONDS, VIDEO_FPS, ConfigError, _fail,
                                          from_mapping)
from wan_streamer_jax.run_config import (CodecTrainConfig, LossConfig, MeshConfig, OptimizerConfig,
                                         TrainConfig)

__all__ = ["AUDIO_FRAMES_PER_UNIT", "FRAMES_PER_UNIT", "GROUPS", "KINDS", "ROLES", "TICKS_PER_UNIT",
           "UNIT_SECONDS", "VIDEO_FPS", "AudioCodecConfig", "CodecTrainConfig", "Config", "ConfigError",
           "LossConfig", "MeshConfig", "ModelConfig", "OptimizerConfig", "TextConfig", "TrainConfig",
           "VideoCodecConfig", "load_config", "resolve_config_path", "to_config_dict"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  embed_dim: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 16
  mlp_dim: int = 128
  rope_sections: tuple[int, int, int] = (8, 4, 4)  # (t, h, w) dims, sum == head_dim
  rope_theta: float = 10000.0
  norm_eps: float = 1e-6
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  remat_policy: str = "none"  # none | full | dots | dots_no_batch
  attention_impl: str = "auto"  # auto | reference | xla | pallas
  window_units: int | None = None  # attend to the last W units (+ sinks); None = unbounded
  sink_units: int = 0
  depth_layers: int = 0  # >0: text_out and audio_out drawn slot by slot by a depth head (model/depth_head.py)
  # True: a video / audio code's embedding also sums one row per FSQ digit (model/code_embedding.py), so
  # codes that share digits share rows: a rare code starts from what its digits mean
  code_digit_embed: bool = False

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      _fail("model.num_heads", f"a multiple of model.num_kv_heads={self.num_kv_heads}", self.num_heads)
    if sum(self.rope_sections) != self.head_dim or any(s % 2 for s in self.rope_sections):
      _fail("model.rope_sections", f"three even sizes summing to model.head_dim={self.head_dim}", self.rope_sections)
    if self.remat_policy not in ("none", "full", "dots", "dots_no_batch"):
      _fail("model.remat_policy", "one of none|full|dots|dots_no_batch", self.remat_policy)
    if self.attention_impl not in ("auto", "reference", "xla", "pallas"):
      _fail("model.attention_impl", "one of auto|reference|xla|pallas", self.attention_impl)
    for name in ("param_dtype", "compute_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16"):
        _fail(f"model.{name}", "float32 or bfloat16", getattr(self, name))
    if self.window_units is not None and self.window_units < 1:
      _fail("model.window_units", "None or an int >= 1", self.window_units)
    if self.sink_units < 0:
      _fail("model.sink_units", "an int >= 0", self.sink_units)
    if not isinstance(self.depth_layers, int) or self.depth_layers < 0:
      _fail("model.depth_layers", "an int >= 0 (0 = no depth head)", self.depth_layers)
    if not isinstance(self.code_digit_embed, bool):
      _fail("model.code_digit_embed", "a bool", self.code_digit_embed)
    for name in ("embed_dim", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim"):
      if getattr(self, name) < 1:
        _fail(f"model.{name}", "an int >= 1", getattr(self, name))


@dataclasses.dataclass(frozen=True)
class Config:
  name: str = "tiny"
  video: VideoCodecConfig = VideoCodecConfig()
  audio: AudioCodecConfig = AudioCodecConfig()
  text: TextConfig = TextConfig()
  model: ModelConfig = ModelConfig()
  mesh: MeshConfig = MeshConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  loss: LossConfig = LossConfig()
  train: TrainConfig = TrainConfig()
  codec_train: CodecTrainConfig = CodecTrainConfig()

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @property
  def separate_targets(self) -> bool:
    """Whether training batches carry `target_tokens` beside `tokens`: text_in's targets are heard words,
    or the model's own-stream inputs are swapped (`train.own_stream_swap`; targets stay clean)."""
    return self.loss.text_in_target == "heard" or self.train.own_stream_swap > 0

  @property
  def loss_marks(self) -> bool:
    """Whether training batches carry `loss_marks` (`data_pipelines/loss_marks.py`: the answer's reply, the
    user's pauses and stops, for `loss.answer_weight` / `loss.pause_weight` / `loss.stop_weight`)."""
    return any(w != 1.0 for w in self.loss.mark_weights())

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Config":
    """Builds a validated Config from a (possibly ml_collections) nested mapping."""
    if hasattr(d, "to_dict"):
      d = d.to_dict()
    return from_mapping(cls, _migrate(d), "")

  def replace(self, **sections: Any) -> "Config":
    """`cfg.replace(model=dict(num_layers=4))` -> new validated Config."""
    d = self.to_dict()
    for key, val in sections.items():
      if isinstance(val, Mapping):
        d[key] = {**d[key], **val}
      else:
        d[key] = val
    return Config.from_dict(d)


_LEGACY_WEIGHTS = {"audio": ("l1_weight", "stft_weight", "mel_weight"),
                   "video": ("l1_weight", "l2_weight", "ssim_weight")}


def _migrate(d: Mapping[str, Any]) -> dict:
  """Configs saved before `codec_train` existed kept codec loss weights in `audio` / `video`."""
  d = dict(d)
  if not any(k in d.get(s, {}) for s, keys in _LEGACY_WEIGHTS.items() for k in keys):
    return d
  train = dict(d.get("codec_train", {}))
  video_run = "video" in str(d.get("name", ""))
  for section, keys in _LEGACY_WEIGHTS.items():
    sec = dict(d.get(section, {}))
    for k in keys:
      if k in sec:
        val = sec.pop(k)
        if k != "l1_weight" or (section == "video") == video_run:
          train.setdefault(k, val)
    d[section] = sec
  d["codec_train"] = train
  return d


def to_config_dict(cfg: Config):
  """Config -> ml_collections.ConfigDict for absl `--config.x.y=` overrides."""
  import ml_collections
  return ml_collections.ConfigDict(cfg.to_dict())


def packaged_configs_dir() -> str:
  """The directory of the shipped named configs (the `configs` package)."""
  import importlib.util
  spec = importlib.util.find_spec("configs")
  if spec is None or not spec.submodule_search_locations:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  return list(spec.submodule_search_locations)[0]


def resolve_config_path(spec: str) -> str:
  """A config file from a path (absolute or relative to the working directory) or a shipped config's
  name: `tiny`, `tiny.py` and `configs/tiny.py` all find the packaged `configs/tiny.py` from anywhere."""
  path = os.path.expanduser(spec)
  if os.path.isfile(path):
    return os.path.abspath(path)
  name = os.path.basename(path)
  name = name if name.endswith(".py") else name + ".py"
  packaged = os.path.join(packaged_configs_dir(), name)
  if os.path.isfile(packaged):
    return packaged
  shipped = sorted(f[:-3] for f in os.listdir(packaged_configs_dir()) if f.endswith(".py") and f != "__init__.py")
  raise ConfigError(f"config {spec!r}: expected a config file or the name of a shipped config "
                    f"({', '.join(shipped)}), found neither")


def load_config(path: str, overrides: Mapping[str, Any] | None = None) -> Config:
  """Loads a config file or shipped config name (its `get_config()`) and applies dotted overrides."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("_wan_config", resolve_config_path(path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cd = module.get_config()
  for key, val in (overrides or {}).items():
    node = cd
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = val
  return Config.from_dict(cd)
