"""Token formats of the codecs and of text: what one 160 ms unit of each kind holds.

These sections fix the token layout (and so the Transformer's vocabularies and
unit length) and the codecs' architectures. How a codec is *trained* (loss
weights, windows, evaluation) is a run setting: `run_config.CodecTrainConfig`.
"""

from __future__ import annotations

import dataclasses
import math

from wan_streamer_jax.config_base import AUDIO_FRAMES_PER_UNIT, FRAMES_PER_UNIT, UNIT_SECONDS, _fail


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
  istft_phase: str = "absolute"  # the istft head's phase: absolute (projected per hop) | advance (+ a running
  #                               phase per bin from projected per-hop advances, carried in the state)
  upsample: str = "subpixel"  # subpixel (causal conv to s*C channels, then depth-to-time) | repeat
  harmonics: int = 0  # > 0: a harmonic oscillator bank beside the last stage (codecs/harmonic.py): per hop of
  #                     strides[0] an F0 and a spectral envelope, `harmonics` sinusoids at k * F0 (0 = none)
  pitch_input: bool = False  # the encoder also reads causal YIN pitch features per hop (codecs/pitch.py;
  #                            needs frontend="stft")

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
    if self.istft_phase not in ("absolute", "advance"):
      _fail("audio.istft_phase", "absolute | advance", self.istft_phase)
    if self.fft_overlap < 1:
      _fail("audio.fft_overlap", "an int >= 1", self.fft_overlap)
    if self.harmonics < 0:
      _fail("audio.harmonics", "an int >= 0 (0 = no harmonic head)", self.harmonics)
    if self.pitch_input and self.frontend != "stft":
      _fail("audio.pitch_input", 'False, or frontend="stft" (the pitch features join the STFT frames)',
            f"pitch_input=True with frontend={self.frontend!r}")

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
  # The model's own text leads its speech by this many units (`text_slots.lead_text`, applied when
  # windows are cut): a word's bytes are due before its voice starts, so the word is decided in text
  # and the voice follows it (Moshi's acoustic delay). 0: the corpus alignment (a word's bytes in the
  # unit its speech starts).
  out_lead_units: int = 0

  PAD = 256
  WORD_END = 257
  END_OF_TURN = 258
  MISSING = 259
  VOCAB_SIZE = 260

  def __post_init__(self):
    if self.text_slots < 1:
      _fail("text.text_slots", "an int >= 1", self.text_slots)
    if not isinstance(self.out_lead_units, int) or isinstance(self.out_lead_units, bool) or self.out_lead_units < 0:
      _fail("text.out_lead_units", "an int >= 0", self.out_lead_units)

  @property
  def tokens_per_unit(self) -> int:
    return self.text_slots

  @property
  def missing_id(self) -> int:
    return self.MISSING

  @property
  def vocab_size(self) -> int:
    return self.VOCAB_SIZE


