"""Places speech turns of a user <-> model conversation on the 160 ms unit clock.

All times are sample offsets at the corpus sample rate; `spu` samples make a
unit. The user speaks off the unit grid (random sub-unit jitter); the model
starts speaking on unit boundaries (it emits one unit per step). Timing rules:

- a model reply starts `onset` units after the unit in which the user stopped
  (onset drawn from `reply_onset`, a corpus setting: `CorpusSpec.reply_onset_units`;
  recorded per turn);
- an interrupted model turn is cut at the boundary of the unit `stop_after`
  (1..3) units after the unit in which the user started talking over it,
  with a 10 ms fade-out;
- backchannels sit in the user's pauses, the user resumes after them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from data_pipelines.speech import SpeechSynthesizer, Utterance, Voice

FADE_S = 0.01


@dataclasses.dataclass
class Turn:
  """One stretch of speech (or typing) by one side."""

  speaker: str  # "user" | "model"
  kind: str  # "speech" | "typed" | "backchannel"
  text: str
  task: str
  start: int  # first sample (typed: the first typing unit's first sample)
  end: int  # one past the last sample actually spoken (after a cut)
  utt: Utterance | None = None
  answer: str | None = None  # the expected answer this (model) turn carries
  interrupted: bool = False
  onset_units: int | None = None  # model: units from the user's last unit to this turn's first
  typed_units: tuple[int, ...] = ()  # typed: the unit each word is typed in

  def spoken_words(self):
    """(word, absolute start sample, absolute end sample) of the words actually spoken."""
    if self.utt is None:
      return []
    out = []
    for w in self.utt.words:
      s = self.start + w.start
      if s >= self.end:
        break
      out.append((w.text, s, min(self.start + w.end, self.end)))
    return out


class Timeline:
  """Builds the turn list of one conversation; `cursor` is where the floor is free again."""

  def __init__(self, synth: SpeechSynthesizer, rng: np.random.Generator, samples_per_unit: int,
               user_voice: Voice | Callable[[], Voice], model_voice: Voice, text_slots: int,
               reply_onset: tuple[int, int] = (2, 2), word_by_word_replies: bool = False):
    # word_by_word_replies: the model's speech is synthesised one word at a time
    # (`SpeechSynthesizer.say_in_parts`), so the voice of a word depends on no word after it
    # (`CorpusSpec.word_by_word_replies`).
    # user_voice: one Voice, or a callable drawing the voice of each user utterance
    # (`voices.Speaker`: random rate/pitch per utterance, from its own generator).
    if not (1 <= reply_onset[0] <= reply_onset[1]):
      raise ValueError(f"reply_onset: expected (lo, hi) units with 1 <= lo <= hi, got {reply_onset!r}")
    self.synth, self.rng, self.spu = synth, rng, samples_per_unit
    self.reply_onset = (int(reply_onset[0]), int(reply_onset[1]))
    self.word_by_word_replies = bool(word_by_word_replies)
    self.user_voice, self.model_voice = user_voice, model_voice
    self.text_slots = text_slots
    self.turns: list[Turn] = []
    self.cursor = 0
    self.last_user_end = 0  # sample; the unit containing it is "where the user stopped"
    self.events: dict[str, int] = {}

  def _user_voice(self) -> Voice:
    return self.user_voice() if callable(self.user_voice) else self.user_voice

  # -- clock helpers --------------------------------------------------------
  def unit_of(self, sample: int) -> int:
    return int(sample) // self.spu

  def last_unit(self, end_sample: int) -> int:
    """Unit containing the last sample of a span ending (exclusively) at `end_sample`."""
    return max(int(end_sample) - 1, 0) // self.spu

  def _gap(self, lo_units: float, hi_units: float) -> int:
    return int(self.rng.uniform(lo_units, hi_units) * self.spu)

  # -- turns ----------------------------------------------------------------
  def silence(self, units: int) -> None:
    self.cursor += int(units) * self.spu

  def user_says(self, text: str, task: str, gap=(1.0, 4.0)) -> Turn:
    utt = self.synth.say(text, self._user_voice())
    start = self.cursor + self._gap(*gap)
    turn = Turn("user", "speech", text, task, start, start + utt.num_samples, utt)
    self.turns.append(turn)
    self.cursor = self.last_user_end = turn.end
    return turn

  def user_types(self, text: str, task: str, gap=(1.0, 3.0)) -> Turn:
    """Typed text: each word takes ceil((bytes + 1) / text_slots) units of typing."""
    unit = self.unit_of(self.cursor + self._gap(*gap))
    first, units = unit, []
    for word in text.split():
      units.append(unit)
      unit += -(-(len(word.encode()) + 1) // self.text_slots)
    turn = Turn("user", "typed", text, task, first * self.spu, unit * self.spu, typed_units=tuple(units))
    self.turns.append(turn)
    self.cursor = self.last_user_end = turn.end
    return turn

  def _model_turn(self, text: str, task: str, kind: str, start_unit: int, answer=None,
                  onset=None) -> Turn:
    if self.word_by_word_replies:
      utt = self.synth.say_in_parts(text.split(), self.model_voice)
    else:
      utt = self.synth.say(text, self.model_voice)
    start = start_unit * self.spu
    turn = Turn("model", kind, text, task, start, start + utt.num_samples, utt, answer=answer,
                onset_units=onset)
    self.turns.append(turn)
    return turn

  def model_replies(self, text: str, task: str, answer: str | None = None, onset=None) -> Turn:
    """The model answers `onset` (drawn from the range; default `reply_onset`) units after the user's last unit."""
    onset = onset or self.reply_onset
    d = int(self.rng.integers(onset[0], onset[1] + 1))
    user_unit = self.last_unit(self.last_user_end)
    start_unit = max(user_unit + d, self.last_unit(self.cursor) + 1)
    turn = self._model_turn(text, task, "speech", start_unit, answer, start_unit - user_unit)
    self.cursor = turn.end
    return turn

  def model_opens(self, text: str, task: str, first_unit=(2, 6)) -> Turn:
    """The model speaks first (no user turn before it)."""
    unit = max(self.unit_of(self.cursor) + 1, int(self.rng.integers(first_unit[0], first_unit[1] + 1)))
    turn = self._model_turn(text, task, "speech", unit)
    self.cursor = turn.end
    return turn

  def model_backchannel(self, text: str, task: str) -> Turn:
    """A short acknowledgement in the user's pause; the floor returns to the user after it."""
    d = int(self.rng.integers(1, 3))
    turn = self._model_turn(text, task, "backchannel", self.last_unit(self.last_user_end) + d, onset=d)
    self.cursor = turn.end + self.spu
    return turn

  def model_interrupted(self, model_text: str, user_text: str, task: str, stop_after=(1, 3)) -> tuple:
    """The model starts a long reply; the user talks over it; the model stops within `stop_after` units.

    Returns (model_turn, user_turn). Records `interrupt_unit` and `stop_unit` in `events`.
    """
    d = int(self.rng.integers(self.reply_onset[0], self.reply_onset[1] + 1))
    model = self._model_turn(model_text, task, "speech", self.last_unit(self.last_user_end) + d, onset=d)
    lo = model.start + 3 * self.spu
    hi = max(lo + 1, model.end - (stop_after[1] + 2) * self.spu)
    user_start = int(self.rng.integers(lo, hi))
    utt = self.synth.say(user_text, self._user_voice())
    user = Turn("user", "speech", user_text, task, user_start, user_start + utt.num_samples, utt)
    self.turns.append(user)
    interrupt_unit = self.unit_of(user_start)
    stop_unit = interrupt_unit + int(self.rng.integers(stop_after[0], stop_after[1] + 1))
    cut = min(stop_unit * self.spu, model.end)
    if cut < model.end:
      model.end, model.interrupted = cut, True
    self.events.update(interrupt_unit=interrupt_unit, stop_unit=stop_unit)
    self.cursor = self.last_user_end = max(user.end, model.end)
    return model, user

  # -- mixing ---------------------------------------------------------------
  def mix(self, speaker: str, num_samples: int) -> np.ndarray:
    """float32 `[num_samples]`: the speaker's turns summed at their offsets (cuts faded out)."""
    out = np.zeros(num_samples, np.float32)
    fade = max(1, int(FADE_S * self.spu / 0.16))
    for t in self.turns:
      if t.speaker != speaker or t.utt is None:
        continue
      seg = np.array(t.utt.audio[: t.end - t.start], np.float32)
      if t.interrupted:
        n = min(fade, seg.shape[0])
        seg[-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
      stop = min(num_samples, t.start + seg.shape[0])
      out[t.start:stop] += seg[: stop - t.start]
    return out

  @property
  def end(self) -> int:
    return max([self.cursor] + [t.end for t in self.turns])


def answer_word_starts(words, answer: str) -> list[int]:
  """Indices in `words` (a reply's words, in order) where `answer` is said, whole words with
  punctuation and case ignored; `[]` when it is not said."""
  norm = lambda w: w.strip(".,!?;:").lower()  # noqa: E731
  target, said = [norm(w) for w in answer.split()], [norm(w) for w in words]
  return [i for i in range(len(said) - max(len(target), 1) + 1) if said[i:i + len(target)] == target]
