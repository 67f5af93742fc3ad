"""Run settings: device mesh, optimizer, loss weights, training schedule, codec training."""

from __future__ import annotations

import dataclasses
import math

from wan_streamer_jax.config_base import _fail


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


# Codes of a batch's `loss_marks` (`data_pipelines/loss_marks.py`): which text_out targets weigh more.
MARK_NONE, MARK_REPLY, MARK_ANSWER, MARK_PAUSE, MARK_STOP = 0, 1, 2, 3, 4
MARK_CODES = (MARK_NONE, MARK_REPLY, MARK_ANSWER, MARK_PAUSE, MARK_STOP)
# the marked targets' metrics (`loss/<name>`, `acc/<name>`, `tokens/<name>`): "reply" is REPLY and ANSWER
MARK_METRICS = ("answer", "reply", "pause", "stop")


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
  # text_in's targets: "stream" (the user's text stream itself: typed words, else MISSING) or "heard"
  # (where nothing is typed, the user's spoken words as heard: each word in the unit after its last
  # sample, `token_data.heard_text`). The input stays the stream (MISSING in spoken turns): predicting
  # what was just said is an ASR task that teaches the trunk to hear the words in `audio_in`.
  text_in_target: str = "stream"
  # text_in targets that are PAD weigh this much (x text_in): with heard targets ~3/4 of them are PAD (no
  # word ended in the unit), easy and never used when streaming (text_in's predictions are not fed back)
  text_in_pad_weight: float = 1.0
  # text_out targets of the reply that carries a conversation's first answer (from the user's stop to the
  # reply's END_OF_TURN, the answer's bytes inside it: `data_pipelines/loss_marks.py`) weigh this much
  # (x text_out): where the reply depends on what the user said or showed; a window, not the answer's
  # bytes alone, so that every alternative at a position weighs the same; 1 = off
  answer_weight: float = 1.0
  # text_out targets in the user's mid-turn pauses (the user stops and goes on with at most a
  # backchannel between: `loss_marks.pause_windows`) weigh this much (x text_out): how much a takeover
  # in a pause costs; 1 = off (batches carry `loss_marks` when any of these weights is on)
  pause_weight: float = 1.0
  # text_out targets right after every user stop (`loss_marks.STOP_UNITS` units from the unit the user
  # stopped, whether they go on after a pause or wait for the reply: `loss_marks.stop_windows`) weigh this
  # much (x text_out): where to learn the hold-or-take decision, both outcomes alike; 1 = off
  stop_weight: float = 1.0

  def __post_init__(self):
    if self.text_in_target not in ("stream", "heard"):
      _fail("loss.text_in_target", "stream | heard", self.text_in_target)
    if not 0.0 <= self.text_in_pad_weight <= 1.0:
      _fail("loss.text_in_pad_weight", "a float in [0, 1]", self.text_in_pad_weight)
    if not (isinstance(self.answer_weight, (int, float)) and self.answer_weight >= 1.0):
      _fail("loss.answer_weight", "a float >= 1 (1 = off)", self.answer_weight)
    if not (isinstance(self.pause_weight, (int, float)) and self.pause_weight >= 1.0):
      _fail("loss.pause_weight", "a float >= 1 (1 = off)", self.pause_weight)
    if not (isinstance(self.stop_weight, (int, float)) and self.stop_weight >= 1.0):
      _fail("loss.stop_weight", "a float >= 1 (1 = off)", self.stop_weight)

  def mark_weights(self) -> tuple[float, ...]:
    """The text_out weight of each `loss_marks` code, indexed by code (`MARK_CODES`)."""
    return (1.0, self.answer_weight, self.answer_weight, self.pause_weight, self.stop_weight)

  def group_weight(self, group: str) -> float:
    return float(getattr(self, group))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Schedule of a training run (the Transformer or a codec); steps count optimizer updates."""

  batch_size: int = 4  # global batch (all processes); a multiple of mesh data*fsdp
  units_per_example: int = 8
  num_steps: int = 20
  seed: int = 0
  log_every: int = 5
  eval_every: int = 0  # 0 = evaluate only at the end (codecs) / never (Transformer without eval data)
  checkpoint_every: int = 1000  # with --workdir: also at the end and on SIGTERM / SIGINT; 0 = only then
  checkpoints_to_keep: int = 3
  # Transformer: per training unit, the probability that the model's own voice and face *inputs*
  # (audio_out / video_out slots) are replaced by another unit's of the same window; targets stay the
  # clean ones (`packing.TokenWindow`). Free-running, the model reads its own samples, not the corpus':
  # the demo's answers hang on the exact tokens of its last unit of voice (README "The demo").
  own_stream_swap: float = 0.0
  # Transformer: per training unit, the probability that its own voice, face and text inputs
  # (the out slots) are the model's own argmax prediction of them, made one unit before by a no-gradient
  # forward of the same step (`train/own_samples.py`, scheduled sampling); targets stay clean. +1 forward.
  own_stream_sampling: float = 0.0
  # Transformer: the probability that a row's out slots, outside the recording's own turns, are the
  # model's own free-running draws: each step first rolls the model out over its window without a
  # gradient, as the streaming engine does (`train/own_history.py`, DAgger); targets stay clean.
  # +1 forward (in decode steps).
  own_history: float = 0.0

  def __post_init__(self):
    if not 0.0 <= self.own_history <= 1.0:
      _fail("train.own_history", "a probability in [0, 1]", self.own_history)
    if self.own_history > 0 and self.own_stream_sampling > 0:
      _fail("train.own_history", "0 while train.own_stream_sampling > 0 (one source of own inputs at a time)",
            self.own_history)
    if not 0.0 <= self.own_stream_swap < 1.0:
      _fail("train.own_stream_swap", "a probability in [0, 1)", self.own_stream_swap)
    if not 0.0 <= self.own_stream_sampling <= 1.0:
      _fail("train.own_stream_sampling", "a probability in [0, 1]", self.own_stream_sampling)
    if self.batch_size < 1:
      _fail("train.batch_size", "an int >= 1", self.batch_size)
    if self.units_per_example < 2:
      _fail("train.units_per_example", "an int >= 2 (next-unit prediction needs a next unit)", self.units_per_example)
    for name in ("num_steps", "eval_every", "checkpoint_every"):
      if getattr(self, name) < 0:
        _fail(f"train.{name}", "an int >= 0", getattr(self, name))
    if self.log_every < 1:
      _fail("train.log_every", "an int >= 1", self.log_every)
    if self.checkpoints_to_keep < 1:
      _fail("train.checkpoints_to_keep", "an int >= 1", self.checkpoints_to_keep)


STREAM_ROLES = ("mixed", "user", "model")


@dataclasses.dataclass(frozen=True)
class CodecTrainConfig:
  """How a codec is trained (`launch.train_codec`); saved with its checkpoint.

  `kind` says which codec a run trains ("" in Transformer configs). Loss
  weights: audio uses `l1`, `stft` (multi-resolution STFT) and `mel`; video
  uses `l1`, `l2` and `ssim` (and `contrast`: per-pixel weights). Windows of `train.units_per_example` units come
  from the user's, the model's or both streams (`role`).
  """

  kind: str = ""  # "" | audio | video
  l1_weight: float = 1.0
  stft_weight: float = 1.0
  mel_weight: float = 1.0
  l2_weight: float = 1.0
  ssim_weight: float = 0.1
  contrast_weight: float = 0.0  # video: per-pixel weight 1 + c * |pixel - frame mean| (losses.contrast_weights)
  entropy_weight: float = 0.0  # both: + w * mean over stages of (1 - soft code entropy) (fsq.soft_code_entropy):
  #                              pushes the batch to use every FSQ code
  f0_weight: float = 0.0  # audio with audio.harmonics > 0: + w * |log2 F0 - log2 YIN F0| over voiced hops
  #                         (codecs/pitch.py): the codes must carry the pitch the harmonic head plays
  log_floor: float = 1e-2  # audio: magnitude floor of the log-STFT / log-mel losses (losses.LOG_FLOOR);
  #                          the log-STFT term barely sees energy below it (~-60 dBFS noise at 1e-2)
  stft_high_weight: float = 1.0  # audio: weight of the log-STFT loss' bins above 4 kHz (losses.NARROWBAND_HZ)
  #                                against 1 below: < 1 spends the codes on the telephone band
  mel_high_weight: float = 1.0  # audio: the same for the log-mel loss' bands centred above 4 kHz
  phase_weight: float = 0.0  # audio: + w * losses.phase_derivative_loss (the phase's change from hop to hop and
  #                            bin to bin against the reference's, on the decoder's iSTFT grid; 0 = off)
  adv_weight: float = 0.0  # audio: + w * least-squares generator loss of `discriminator.Discriminator`
  fm_weight: float = 0.0  # audio: + w * its feature-matching loss; either > 0 trains a discriminator
  adv_start_step: int = 0  # the discriminator and both terms start at this step (spectral losses first)
  disc_periods: tuple[int, ...] = (2, 3, 5)  # multi-period sub-discriminators (samples)
  disc_ffts: tuple[int, ...] = (512,)  # multi-resolution STFT sub-discriminators (n_fft, hop n_fft/4)
  disc_channels: int = 8  # width of the sub-discriminators' first layer
  disc_window: int = 4096  # samples of each training window the discriminators judge (a random span)
  disc_learning_rate: float = 2e-4  # Adam (b1 0.5, b2 0.9), constant, clipped at optimizer.grad_clip_norm
  role: str = "mixed"  # training windows: mixed | user | model
  speech_oversample: int = 2  # audio: draw k x batch windows, train on the most speech-active
  cache_streams: str = "auto"  # keep the trained kind's streams in memory: auto (audio only) | yes | no
  data_threads: int = 1  # Grain read threads
  eval_windows: int = 64  # held-out windows of the final evaluation (a quarter of them every eval_every)
  eval_units: int = 25  # units per evaluation window (25 = 4 s)
  eval_split: str = "validation"  # validation | test
  eval_role: str = "mixed"
  train_voices: str = "classic"  # audio: the training corpus' user voices: classic | train (the voice pool
  #                                built by `make_dataset --user_voices=train`); evaluation stays on classic
  augment: bool = False  # audio: augment training windows (data_pipelines.augment: reverb, noise incl.
  #                        babble, EQ/band limits, gain, clipping)

  @property
  def adversarial(self) -> bool:
    """Whether the run trains a discriminator (`adv_weight` or `fm_weight` > 0)."""
    return self.adv_weight > 0 or self.fm_weight > 0

  def __post_init__(self):
    if self.kind not in ("", "audio", "video"):
      _fail("codec_train.kind", "'' (a Transformer run), audio or video", self.kind)
    for name in ("l1_weight", "stft_weight", "mel_weight", "l2_weight", "ssim_weight",
                 "contrast_weight", "entropy_weight", "f0_weight", "stft_high_weight", "mel_high_weight", "adv_weight",
                 "fm_weight", "phase_weight"):
      if getattr(self, name) < 0:
        _fail(f"codec_train.{name}", "a weight >= 0", getattr(self, name))
    if self.adversarial:
      if self.kind == "video":
        _fail("codec_train.adv_weight / fm_weight", "0 for a video codec (the discriminators are audio's)",
              (self.adv_weight, self.fm_weight))
      if not self.disc_periods and not self.disc_ffts:
        _fail("codec_train.disc_periods / disc_ffts", "at least one sub-discriminator", (self.disc_periods,
                                                                                          self.disc_ffts))
    if any(int(p) < 2 for p in self.disc_periods):
      _fail("codec_train.disc_periods", "periods >= 2 samples", tuple(self.disc_periods))
    if any(int(n) < 64 or int(n) & (int(n) - 1) for n in self.disc_ffts):
      _fail("codec_train.disc_ffts", "powers of two >= 64", tuple(self.disc_ffts))
    if self.adv_start_step < 0 or self.disc_channels < 1 or self.disc_window < 64:
      _fail("codec_train.adv_start_step / disc_channels / disc_window", "a step >= 0 / a width >= 1 / >= 64 samples",
            (self.adv_start_step, self.disc_channels, self.disc_window))
    if not self.disc_learning_rate > 0:
      _fail("codec_train.disc_learning_rate", "a learning rate > 0", self.disc_learning_rate)
    if not self.log_floor > 0:
      _fail("codec_train.log_floor", "a magnitude floor > 0 (e.g. 1e-2)", self.log_floor)
    for name in ("role", "eval_role"):
      if getattr(self, name) not in STREAM_ROLES:
        _fail(f"codec_train.{name}", " | ".join(STREAM_ROLES), getattr(self, name))
    if self.cache_streams not in ("auto", "yes", "no"):
      _fail("codec_train.cache_streams", "auto | yes | no", self.cache_streams)
    if self.eval_split not in ("validation", "test"):
      _fail("codec_train.eval_split", "validation | test", self.eval_split)
    if self.train_voices not in ("classic", "train"):
      _fail("codec_train.train_voices", "classic | train", self.train_voices)
    for name in ("speech_oversample", "data_threads", "eval_windows", "eval_units"):
      if getattr(self, name) < 1:
        _fail(f"codec_train.{name}", "an int >= 1", getattr(self, name))
