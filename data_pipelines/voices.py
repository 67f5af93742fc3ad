"""Every English eSpeak NG voice the `espeakng-loader` wheel ships, split by whole voices.

An eSpeak voice is an accent (a language file, `lang/gmw/en*`: en, en-029, en-gb-scotland,
en-gb-x-gbclan, en-gb-x-gbcwmd, en-gb-x-rp, en-shaw, en-us, en-us-nyc) combined with a variant (`voices/!v/*`: m1..m8, f1..f5, the
Klatt synthesiser variants klatt..klatt6, and ~80 named variants), e.g. "en-us+klatt3".
The variant is the speaker: it sets formants, pitch base and voice quality. A whole
variant is held out with all its accents:

  TEST_VARIANTS        reported once, never used to choose a setting
  VALIDATION_VARIANTS  used to choose settings
  train                every other variant the wheel ships (the corpus' classic voices included)

The held-out sets were drawn once (numpy seed 12) from the variants that sound like a
person (not `EFFECT_VARIANTS`) and that the classic corpus voices (`speech.MODEL_VOICE`,
`speech.USER_VOICES`) do not use, with one Klatt variant in each; they are written out here
so that a newer wheel never moves a voice between splits.

`Speaker` is one conversation's user: an accent and a variant, and a fresh random rate,
pitch and pitch range for every utterance (`next_voice()`), from its own generator.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from data_pipelines.speech import USER_VOICES, Voice

VALIDATION_VARIANTS = ("Andy", "AnxiousAndy", "Denis", "Diogo", "Storm", "klatt2", "m1", "steph3")
TEST_VARIANTS = ("Annie", "ed", "edward", "iven", "john", "klatt4", "m6", "marcelo", "quincy", "victor")
# Whispered, robotic or distorted variants: trained on, never held out (a held-out figure on
# them would measure the effect, not the speaker).
EFFECT_VARIANTS = ("Demonic", "Tweaky", "UniRobot", "anikaRobot", "croak", "fast", "whisper", "whisperf",
                   "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7",
                   "robosoft8")
POOLS = ("train", "validation", "test")
RATE_RANGE = (130, 230)  # words per minute, uniform per utterance
PITCH_RANGE = (15, 85)  # eSpeak pitch 0..100, uniform per utterance
PITCH_SPAN_RANGE = (10, 95)  # eSpeak pitch range (intonation) 0..100, uniform per utterance
CLASSIC_SPEAKER_PROB = 0.25  # train pool: a conversation's user is one of the classic voices


def _data_path() -> str:
  import espeakng_loader
  return espeakng_loader.get_data_path()


@functools.lru_cache(maxsize=1)
def accents() -> tuple[str, ...]:
  """The English language files the wheel ships (`lang/gmw/en*`), lower-cased, sorted.

  eSpeak resolves "<file name>+<variant>" (e.g. "en-gb-x-rp+m3"); the `language` codes
  inside the files are not all names it accepts ("en-gb+m3" fails).
  """
  folder = os.path.join(_data_path(), "lang", "gmw")
  codes = sorted(n.lower() for n in os.listdir(folder) if n.lower().startswith("en"))
  if not codes:
    raise RuntimeError(f"no English eSpeak NG languages under {folder}")
  return tuple(codes)


@functools.lru_cache(maxsize=1)
def all_variants() -> tuple[str, ...]:
  """Every variant file name the wheel ships (`voices/!v/*`), sorted."""
  folder = os.path.join(_data_path(), "voices", "!v")
  names = tuple(sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))))
  missing = sorted(set(VALIDATION_VARIANTS + TEST_VARIANTS) - set(names))
  if missing:
    raise RuntimeError(f"the eSpeak NG wheel lacks the held-out variants {missing}")
  return names


def variants(pool: str) -> tuple[str, ...]:
  """The variants of `pool` ("train" | "validation" | "test")."""
  if pool == "validation":
    return VALIDATION_VARIANTS
  if pool == "test":
    return TEST_VARIANTS
  if pool == "train":
    held = set(VALIDATION_VARIANTS) | set(TEST_VARIANTS)
    return tuple(v for v in all_variants() if v not in held)
  raise ValueError(f"voice pool: expected one of {POOLS}, got {pool!r}")


def random_voice(rng: np.random.Generator, accent: str, variant: str) -> Voice:
  """`accent+variant` with a uniform random rate, pitch and pitch range."""
  return Voice(f"{accent}+{variant}", rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
               pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
               pitch_range=int(rng.integers(PITCH_SPAN_RANGE[0], PITCH_SPAN_RANGE[1] + 1)))


class Speaker:
  """One speaker of `pool`: fixed accent and variant, a new rate/pitch/range per utterance.

  Call it (or `next_voice()`) once per utterance. A classic speaker (`fixed` set) always
  returns that voice. Deterministic from the generator it is built with.
  """

  def __init__(self, accent: str, variant: str, rng: np.random.Generator, fixed: Voice | None = None):
    self.accent, self.variant, self.rng, self.fixed = accent, variant, rng, fixed

  @classmethod
  def sample(cls, rng: np.random.Generator, pool: str = "train") -> "Speaker":
    names = variants(pool)
    if pool == "train" and rng.random() < CLASSIC_SPEAKER_PROB:
      v = USER_VOICES[int(rng.integers(len(USER_VOICES)))]
      accent, variant = (v.name.split("+", 1) + [""])[:2]
      return cls(accent, variant, rng, fixed=v)
    acc = accents()
    return cls(acc[int(rng.integers(len(acc)))], names[int(rng.integers(len(names)))], rng)

  def next_voice(self) -> Voice:
    return self.fixed if self.fixed is not None else random_voice(self.rng, self.accent, self.variant)

  __call__ = next_voice

  def describe(self) -> dict:
    return {"accent": self.accent, "variant": self.variant, "classic": self.fixed is not None}
