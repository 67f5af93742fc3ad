"""Typed configuration: the single source of truth for every run.

Configs are frozen dataclasses, validated on construction. Named configs live
in `configs/*.py` as `get_config() -> ml_collections.ConfigDict` (so absl's
`--config.model.num_layers=4` overrides work); `Config.from_dict` turns that
dict back into the typed, validated `Config` the library consumes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

UNIT_SECONDS = 0.16  # one streaming unit = 160 ms
VIDEO_FPS = 25
FRAMES_PER_UNIT = 4  # 4 frames at 25 fps = 160 ms
AUDIO_FRAMES_PER_UNIT = 4  # codec frames at 25 Hz (40 ms each)
TICKS_PER_UNIT = 4  # RoPE time ticks of 40 ms

GROUPS = ("video_in", "audio_in", "text_in", "video_out", "audio_out", "text_out")
KINDS = ("video", "audio", "text")
ROLES = ("in", "out")


def _fail(field: str, expected: str, got: Any) -> None:
  raise ValueError(f"config field `{field}`: expected {expected}, got {got!r}")


class _FSQVocabulary:
  """Codes `0 .. prod(levels) - 1` of an FSQ codebook, then MISSING; shared by both codecs."""

  @property
  def codebook_size(self) -> int:
    return math.prod(self.levels)

  @property
  def missing_id(self) -> int:
    return self.codebook_size

  @property
  def vocab_size(self) -> int:
    return self.codebook_size + 1


@dataclasses.dataclass(frozen=True)
class VideoCodecConfig(_FSQVocabulary):
  """Video codec: 4 frames of `[height, width, 3]` uint8 -> one latent frame of `(H/s, W/s)` codes.

  Architecture (see `codecs/video_codec.py`): a space-to-depth patchify of
  `patch_size = spatial_stride / 2**(len(channels) - 1)` pixels, then one
  resolution stage per entry of `channels` (each after the first halves H and W),
  temporal compression 4 by a causal strided conv at the first stage, causal
  temporal kernels of `kernel_t` latent frames in the residual blocks.
  """

  height: int = 16
  width: int = 16
  spatial_stride: int = 8  # H/s x W/s latent grid
  levels: tuple[int, ...] = (8, 5, 5, 5)  # FSQ levels -> prod(levels) codes
  channels: tuple[int, ...] = (48, 96)  # width per resolution stage (first = after the patchify)
  kernel_t: int = 2  # causal temporal kernel (latent frames) of the residual blocks
  num_res_blocks: int = 1  # residual blocks per stage (encoder and decoder)
  res_norm: bool = False  # RMS norm (per position, over channels) at the input of each residual block
  upsample: str = "subpixel"  # subpixel (causal conv to s*C channels, then depth-to-time) | repeat
  # codec training loss weights (launch/train_codec.py); no effect on the codes' format
  l1_weight: float = 1.0
  l2_weight: float = 1.0
  ssim_weight: float = 0.1

  def __post_init__(self):
    if not isinstance(self.spatial_stride, int) or self.spatial_stride < 1 or \
        self.spatial_stride & (self.spatial_stride - 1):
      _fail("video.spatial_stride", "a power of two", self.spatial_stride)
    for name in ("height", "width"):
      val = getattr(self, name)
      if val <= 0 or val % self.spatial_stride:
        _fail(f"video.{name}", f"a positive multiple of video.spatial_stride={self.spatial_stride}", val)
    if not self.levels or min(self.levels) < 2:
      _fail("video.levels", "a non-empty tuple of ints >= 2", self.levels)
    if not self.channels or min(self.channels) < 1:
      _fail("video.channels", "a non-empty tuple of positive widths", self.channels)
    if 2 ** (len(self.channels) - 1) > self.spatial_stride:
      _fail("video.channels", f"at most log2(spatial_stride)+1 = {self.spatial_stride.bit_length()} "
            "stages (each stage after the first halves the resolution)", self.channels)
    if self.kernel_t < 1:
      _fail("video.kernel_t", "an int >= 1", self.kernel_t)
    if self.num_res_blocks < 0:
      _fail("video.num_res_blocks", "an int >= 0", self.num_res_blocks)
    if self.upsample not in ("subpixel", "repeat"):
      _fail("video.upsample", "subpixel | repeat", self.upsample)
    for name in ("l1_weight", "l2_weight", "ssim_weight"):
      if getattr(self, name) < 0:
        _fail(f"video.{name}", "a weight >= 0", getattr(self, name))

  @property
  def patch_size(self) -> int:
    return self.spatial_stride >> (len(self.channels) - 1)

  @property
  def frames_per_unit(self) -> int:
    return FRAMES_PER_UNIT

  @property
  def latent_dim(self) -> int:
    return len(self.levels)

  @property
  def latent_h(self) -> int:
    return self.height // self.spatial_stride

  @property
  def latent_w(self) -> int:
    return self.width // self.spatial_stride

  @property
  def tokens_per_unit(self) -> int:
    return self.latent_h * self.latent_w

  @property
  def bitrate_bps(self) -> float:
    return self.tokens_per_unit * math.log2(self.codebook_size) / UNIT_SECONDS


@dataclasses.dataclass(frozen=True)
class AudioCodecConfig(_FSQVocabulary):
  """Audio codec: waveform at `sample_rate` -> 25 Hz frames of `num_quantizers` codes.

  Architecture (see `codecs/audio_codec.py`): one causal downsampling stage per
  entry of `strides` (product = samples_per_frame); the first is a causal
  log-magnitude STFT (`frontend="stft"`, hop strides[0]) or a learned strided
  conv; widths `channels` per stage (a shorter `channels` repeats its last
  width), residual units of kernel `kernel_t` with `dilations`, a `latent_dim`
  latent quantised by `num_quantizers` residual FSQ stages of `levels`; the
  decoder mirrors it and ends in a causal inverse STFT (`head="istft"`) or a
  causal upsampling conv.
  """

  sample_rate: int = 16000
  num_quantizers: int = 2  # residual FSQ levels Q -> 4 * Q tokens per unit
  levels: tuple[int, ...] = (8, 5, 5, 5)
  channels: tuple[int, ...] = (192, 384)  # width after each downsampling stage
  strides: tuple[int, ...] = (160, 4)  # product == samples_per_frame (10 ms hops, then 40 ms frames)
  kernel_t: int = 3  # residual-unit causal kernel
  dilations: tuple[int, ...] = (1, 3)  # one residual unit per dilation, per stage
  latent_dim: int = 32  # continuous latent the residual FSQ stages project from
  res_norm: bool = False  # RMS norm (per position, over channels) at the input of each residual unit
  frontend: str = "stft"  # encoder input: stft (causal log-magnitude STFT, hop strides[0],
  #                          n_fft = fft_overlap * strides[0]) | conv (a learned strided causal conv)
  head: str = "istft"  # decoder output: istft (log-magnitude + phase, causal inverse STFT, same sizes)
  #                      | conv (a causal upsampling conv by strides[0])
  fft_overlap: int = 2
  upsample: str = "subpixel"  # subpixel (causal conv to s*C channels, then depth-to-time) | repeat
  # codec training loss weights (launch/train_codec.py); no effect on the codes' format
  l1_weight: float = 1.0
  stft_weight: float = 1.0
  mel_weight: float = 1.0

  def __post_init__(self):
    spu = self.sample_rate * UNIT_SECONDS
    if self.sample_rate <= 0 or abs(spu - round(spu)) > 1e-9 or round(spu) % AUDIO_FRAMES_PER_UNIT:
      _fail("audio.sample_rate", "a rate whose 160 ms unit holds a whole multiple of 4 samples (e.g. 16000, 24000)", self.sample_rate)
    if not self.strides or min(self.strides) < 1 or math.prod(self.strides) != self.samples_per_frame:
      _fail("audio.strides", f"strides whose product is samples_per_frame={self.samples_per_frame}", self.strides)
    if self.num_quantizers < 1:
      _fail("audio.num_quantizers", "an int >= 1", self.num_quantizers)
    if not self.levels or min(self.levels) < 2:
      _fail("audio.levels", "a non-empty tuple of ints >= 2", self.levels)
    if not self.channels or min(self.channels) < 1 or len(self.channels) > len(self.strides):
      _fail("audio.channels", f"1..{len(self.strides)} positive widths (one per stride)", self.channels)
    if self.kernel_t < 1:
      _fail("audio.kernel_t", "an int >= 1", self.kernel_t)
    if any(d < 1 for d in self.dilations):
      _fail("audio.dilations", "a tuple of ints >= 1", self.dilations)
    if self.latent_dim < 1:
      _fail("audio.latent_dim", "an int >= 1", self.latent_dim)
    if self.upsample not in ("subpixel", "repeat"):
      _fail("audio.upsample", "subpixel | repeat", self.upsample)
    if self.head not in ("istft", "conv"):
      _fail("audio.head", "istft | conv", self.head)
    if self.frontend not in ("stft", "conv"):
      _fail("audio.frontend", "stft | conv", self.frontend)
    if self.fft_overlap < 1:
      _fail("audio.fft_overlap", "an int >= 1", self.fft_overlap)
    for name in ("l1_weight", "stft_weight", "mel_weight"):
      if getattr(self, name) < 0:
        _fail(f"audio.{name}", "a weight >= 0", getattr(self, name))

  @property
  def stage_channels(self) -> tuple[int, ...]:
    """Width after each downsampling stage (`channels` padded with its last width)."""
    return tuple(self.channels) + (self.channels[-1],) * (len(self.strides) - len(self.channels))

  @property
  def samples_per_unit(self) -> int:
    return int(round(self.sample_rate * UNIT_SECONDS))

  @property
  def samples_per_frame(self) -> int:
    return self.samples_per_unit // AUDIO_FRAMES_PER_UNIT

  @property
  def frames_per_unit(self) -> int:
    return AUDIO_FRAMES_PER_UNIT

  @property
  def tokens_per_unit(self) -> int:
    return AUDIO_FRAMES_PER_UNIT * self.num_quantizers

  @property
  def bitrate_bps(self) -> float:
    return 25.0 * self.num_quantizers * math.log2(self.codebook_size)


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """Byte-level text: UTF-8 bytes 0..255 plus specials."""

  text_slots: int = 4  # byte tokens per unit per direction

  PAD = 256
  WORD_END = 257
  END_OF_TURN = 258
  MISSING = 259
  VOCAB_SIZE = 260

  def __post_init__(self):
    if self.text_slots < 1:
      _fail("text.text_slots", "an int >= 1", self.text_slots)

  @property
  def tokens_per_unit(self) -> int:
    return self.text_slots

  @property
  def missing_id(self) -> int:
    return self.MISSING

  @property
  def vocab_size(self) -> int:
    return self.VOCAB_SIZE


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
    for name in ("embed_dim", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim"):
      if getattr(self, name) < 1:
        _fail(f"model.{name}", "an int >= 1", getattr(self, name))


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh `(data, fsdp, tensor)`; -1 in one axis takes the remaining devices.

  The default (`data=-1`) uses every device: data parallelism over as many
  devices as divide the global batch, and any leftover factor on `tensor`
  (when `tensor` is 1). An explicit shape that does not fit fails naming both
  numbers.
  """

  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def shape(self, num_devices: int, batch_size: int | None = None) -> tuple[int, int, int]:
    """Resolved `(data, fsdp, tensor)` for `num_devices`; with `batch_size`, data*fsdp divides it."""
    dims = [self.data, self.fsdp, self.tensor]
    if dims.count(-1) > 1:
      _fail("mesh", "at most one axis set to -1", tuple(dims))
    if any(d == 0 or d < -1 for d in dims):
      _fail("mesh", "axis sizes >= 1 (or -1 for the remaining devices)", tuple(dims))
    if -1 in dims:
      auto = dims.index(-1)
      known = math.prod(d for d in dims if d != -1)
      if num_devices % known:
        _fail("mesh", f"fixed axes whose product ({known}) divides the device count {num_devices}", tuple(dims))
      rest = num_devices // known
      if batch_size is not None and auto < 2:  # data or fsdp: the batch is sharded over data*fsdp
        other = dims[1 - auto]
        take = math.gcd(rest, batch_size // other) if batch_size % other == 0 else rest
        if take < rest and dims[2] == 1:
          dims[2] = rest // take  # devices the batch cannot use go to tensor parallelism
          rest = take
      dims[auto] = rest
    if math.prod(dims) != num_devices:
      _fail("mesh", f"data*fsdp*tensor equal to the device count {num_devices}",
            f"{tuple(dims)} (product {math.prod(dims)})")
    if batch_size is not None and batch_size % (dims[0] * dims[1]):
      _fail("train.batch_size", f"a multiple of mesh data*fsdp = {dims[0]}*{dims[1]} = {dims[0] * dims[1]} "
            f"(the batch is sharded over both; mesh {tuple(dims)})", batch_size)
    return tuple(dims)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = 3e-3
  warmup_steps: int = 10
  decay_steps: int = 1000
  end_lr_fraction: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.01
  grad_clip_norm: float = 1.0


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Per-(kind, role) cross-entropy weights, keyed by group name."""

  video_in: float = 0.0
  audio_in: float = 0.1
  text_in: float = 0.1
  video_out: float = 1.0
  audio_out: float = 1.0
  text_out: float = 1.0
  z_loss: float = 0.0

  def group_weight(self, group: str) -> float:
    return float(getattr(self, group))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  batch_size: int = 4
  units_per_example: int = 8
  num_steps: int = 20
  seed: int = 0
  log_every: int = 5
  checkpoint_every: int = 0  # 0 = only at the end
  checkpoints_to_keep: int = 3

  def __post_init__(self):
    if self.batch_size < 1:
      _fail("train.batch_size", "an int >= 1", self.batch_size)
    if self.units_per_example < 2:
      _fail("train.units_per_example", "an int >= 2 (next-unit prediction needs a next unit)", self.units_per_example)


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

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Config":
    """Builds a validated Config from a (possibly ml_collections) nested mapping."""
    return _from_mapping(cls, d, "")

  def replace(self, **sections: Any) -> "Config":
    """`cfg.replace(model=dict(num_layers=4))` -> new validated Config."""
    d = self.to_dict()
    for key, val in sections.items():
      if isinstance(val, Mapping):
        d[key] = {**d[key], **val}
      else:
        d[key] = val
    return Config.from_dict(d)


def _from_mapping(cls, d: Mapping[str, Any], prefix: str):
  if hasattr(d, "to_dict"):
    d = d.to_dict()
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = set(d) - set(fields)
  if unknown:
    _fail(prefix.rstrip(".") or "config", f"only the fields {sorted(fields)}", sorted(unknown))
  kwargs = {}
  for name, val in d.items():
    ftype = fields[name].type
    sub = {"VideoCodecConfig": VideoCodecConfig, "AudioCodecConfig": AudioCodecConfig,
           "TextConfig": TextConfig, "ModelConfig": ModelConfig, "MeshConfig": MeshConfig,
           "OptimizerConfig": OptimizerConfig, "LossConfig": LossConfig,
           "TrainConfig": TrainConfig}.get(ftype if isinstance(ftype, str) else ftype.__name__)
    if sub is not None:
      kwargs[name] = _from_mapping(sub, val, f"{prefix}{name}.")
    elif isinstance(val, list):
      kwargs[name] = tuple(val)
    else:
      kwargs[name] = val
  return cls(**kwargs)


def to_config_dict(cfg: Config):
  """Config -> ml_collections.ConfigDict for absl `--config.x.y=` overrides."""
  import ml_collections
  return ml_collections.ConfigDict(cfg.to_dict())


def load_config(path: str, overrides: Mapping[str, Any] | None = None) -> Config:
  """Loads `configs/NAME.py` (its `get_config()`) and applies dotted overrides."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("_wan_config", path)
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
