"""TFDS builder of the synthetic dialogue corpus (ArrayRecord, no TensorFlow).

    builder = make_synthetic_builder(cfg, size="tiny", data_dir="/tmp/tfds")
    builder.download_and_prepare()
    source = builder.as_data_source("train")   # random access, numpy dicts

Builder configs are named `{size}_{H}x{W}_{rate}hz_t{text_slots}_s{seed}`
(e.g. `tiny_64x64_16000hz_t8_s0`; `_onset{lo}-{hi}` appended for a non-default
reply onset, `_v{pool}` for another user voice pool, `_words` for word-by-word replies), so corpora for different model configs
sit side by side in one data_dir. Sizes (conversations per split):
tiny 24/4/4 (tests), small 1000/100/100, full 20000/500/500. A 64x64
conversation (~70 units) takes ~1 MB on disk (float32 audio, zlib-compressed video).

Feature shapes and dtypes are those of `corpus.generate_conversation`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.corpus import CorpusSpec, generate_conversation
from wan_streamer_jax.config import Config

# TFDS spills a split's shuffle buffer to disk past 1 GB through tf.io.gfile, which
# needs TensorFlow (not a dependency here): keep splits in memory up to 16 GB instead
# (small ~1.2 GB, full ~21 GB -- `full` needs TensorFlow installed or a larger limit).
try:
  import tensorflow  # noqa: F401
except ImportError:
  from tensorflow_datasets.core import shuffle as _tfds_shuffle
  _tfds_shuffle.MAX_MEM_BUFFER_SIZE = max(_tfds_shuffle.MAX_MEM_BUFFER_SIZE, 16 << 30)

SIZES = {
    "tiny": {"train": 24, "validation": 4, "test": 4},
    "small": {"train": 1000, "validation": 100, "test": 100},
    "full": {"train": 20000, "validation": 500, "test": 500},
}


def conversation_features(height: int, width: int, text_slots: int) -> tfds.features.FeaturesDict:
  """The TFDS features of one conversation (shared with the recordings-folder builder)."""
  T = tfds.features.Tensor
  audio = lambda: T(shape=(None,), dtype=np.float32, encoding="bytes")  # noqa: E731
  video = lambda: T(shape=(None, height, width, 3), dtype=np.uint8, encoding="zlib")  # noqa: E731
  text = lambda: T(shape=(None, text_slots), dtype=np.int32, encoding="bytes")  # noqa: E731
  return tfds.features.FeaturesDict({
      "user_audio": audio(), "user_video": video(), "user_text": text(),
      "user_camera_on": T(shape=(None,), dtype=np.bool_),
      "model_audio": audio(), "model_video": video(), "model_text": text(),
      "num_units": tfds.features.Scalar(dtype=np.int32),
      "task": tfds.features.Text(), "expected_answer": tfds.features.Text(),
      "answer_unit": tfds.features.Scalar(dtype=np.int32),
      "conversation_id": tfds.features.Text(), "metadata": tfds.features.Text(),
  })


class SyntheticDialoguesConfig(tfds.core.BuilderConfig):
  """A corpus size at a given frame size / sample rate / text slot count."""

  def __init__(self, *, size: str, spec: CorpusSpec, **kwargs):
    if size not in SIZES:
      raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    name = f"{size}_{spec.height}x{spec.width}_{spec.sample_rate}hz_t{spec.text_slots}_s{spec.seed}"
    if spec.reply_onset_units != CorpusSpec.reply_onset_units:
      name += "_onset{}-{}".format(*spec.reply_onset_units)
    if spec.user_voices != "classic":  # another speaker pool: another corpus beside the classic one
      name += f"_v{spec.user_voices}"
    if spec.word_by_word_replies:  # the model's speech said one word at a time
      name += "_words"
    super().__init__(name=name, description=f"{size} synthetic dialogue corpus, {spec}", **kwargs)
    self.size = size
    self.spec = spec
    self.num_examples = dict(SIZES[size])


class SyntheticDialogues(tfds.core.GeneratorBasedBuilder):
  """User <-> model audio-visual conversations: speech (eSpeak NG), scenes, avatar, aligned text."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Replies that end a user turn have >= 4 words (Full-Duplex-Bench takeovers); "
                            "reply onset a corpus setting, default 2 units (was drawn from 1..4).",
                   "1.2.0": "An answer's unit is its last place in the reply (\"one times one is one.\" marked an "
                            "operand); word-by-word replies (suffix `_words`) replace two-part `_causal` ones."}
  BUILDER_CONFIGS = [SyntheticDialoguesConfig(size=s, spec=CorpusSpec()) for s in SIZES]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # TFDS's default probes `importlib_resources`, which the stack does not install
    return epath.Path(__file__)

  def __init__(self, *, num_examples: dict | None = None, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    self._num_examples = dict(self.builder_config.num_examples, **(num_examples or {}))

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.builder_config.spec
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Synthetic full-duplex audio-visual dialogues for wan_streamer_jax: greetings, "
                     "arithmetic by voice, colour of a shown shape, repeat-after-me, interruptions, "
                     "backchannels and silences. Unit = 160 ms = 4 frames at 25 fps."),
        features=conversation_features(spec.height, spec.width, spec.text_slots),
        metadata=tfds.core.MetadataDict(corpus_spec=dataclasses.asdict(spec)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    return {split: self._generate_examples(split, n) for split, n in self._num_examples.items() if n > 0}

  def _generate_examples(self, split: str, num: int):
    spec = self.builder_config.spec
    for index in range(num):
      ex = generate_conversation(spec, split, index)
      yield ex["conversation_id"], ex


def make_synthetic_builder(cfg: Config, size: str = "tiny", data_dir: str | None = None, seed: int = 0,
                           num_examples: dict | None = None, **spec_overrides) -> SyntheticDialogues:
  """The builder for `cfg`'s frame size, sample rate and text slots (`num_examples` overrides split sizes)."""
  spec = CorpusSpec.from_config(cfg, seed=seed, **spec_overrides)
  config = SyntheticDialoguesConfig(size=size, spec=spec)
  if config.name in SyntheticDialogues.builder_configs:  # TFDS wants the name of a predefined config
    config = config.name
  return SyntheticDialogues(config=config, data_dir=data_dir, num_examples=num_examples)
