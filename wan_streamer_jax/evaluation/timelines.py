"""Timelines: what each side of a dialogue did and when, the input of every behaviour metric.

A `SideTimeline` is one side's speech activity per 40 ms frame (25 fps, four
frames per 160 ms unit) and its word events in seconds. The metrics never look
at audio or tokens directly: a model's streams, the corpus' reference streams
and hand-built test cases all become timelines first.

Speech activity comes from audio (`speech_activity`: frame RMS over a threshold,
short gaps closed, blips dropped); words come from a text stream
(`text_stream_words`: the model's bytes up to each WORD_END) or from a speech
recogniser.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wan_streamer_jax.config import FRAMES_PER_UNIT, UNIT_SECONDS, TextConfig

FRAME_S = UNIT_SECONDS / FRAMES_PER_UNIT  # 40 ms


@dataclasses.dataclass(frozen=True)
class Word:
  """One word: `start`, `end` in seconds from the start of the dialogue (end exclusive)."""

  text: str
  start: float
  end: float


@dataclasses.dataclass(frozen=True)
class SideTimeline:
  """One side of a dialogue.

  speech: bool `[frames]` at 25 fps, True where this side is speaking.
  words: its words in time order.
  """

  speech: np.ndarray
  words: tuple[Word, ...] = ()

  def __post_init__(self):
    speech = np.asarray(self.speech)
    if speech.ndim != 1 or speech.dtype != bool:
      raise ValueError(f"SideTimeline.speech: expected bool [frames], got {speech.dtype} {speech.shape}")

  @property
  def num_frames(self) -> int:
    return int(self.speech.shape[0])

  def segments(self) -> list[tuple[float, float]]:
    """Speech segments `(start_s, end_s)` (maximal runs of active frames)."""
    return [(a * FRAME_S, b * FRAME_S) for a, b in runs(self.speech)]

  def speech_seconds(self, start: float, end: float) -> float:
    """Seconds of speech inside `[start, end)` (frames counted by their overlap with the window)."""
    return float(sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.segments()))

  def words_in(self, start: float, end: float) -> list[Word]:
    """Words starting inside `[start, end)`."""
    return [w for w in self.words if start <= w.start < end]

  def speaking_at(self, t: float) -> bool:
    f = int(np.floor(t / FRAME_S + 1e-9))
    return 0 <= f < self.num_frames and bool(self.speech[f])

  def segment_at(self, t: float) -> tuple[float, float] | None:
    """The speech segment containing time `t` (None when silent at `t`)."""
    for a, b in self.segments():
      if a <= t < b:
        return a, b
    return None

  def first_onset(self, start: float, end: float) -> float | None:
    """Time of the first speech inside `[start, end)`: `start` itself when already speaking."""
    for a, b in self.segments():
      if b > start and a < end:
        return max(a, start)
    return None


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
  """`[start, end)` index pairs of the True runs of a bool `[n]` array."""
  m = np.concatenate([[False], np.asarray(mask, bool), [False]])
  d = np.flatnonzero(m[1:] != m[:-1])
  return [(int(a), int(b)) for a, b in zip(d[0::2], d[1::2])]


def clean_activity(active: np.ndarray, merge_gap_frames: int, min_segment_frames: int) -> np.ndarray:
  """Closes gaps of <= `merge_gap_frames` inside speech, then drops runs shorter than `min_segment_frames`."""
  out = np.asarray(active, bool).copy()
  r = runs(out)
  for (_, b), (a2, _) in zip(r[:-1], r[1:]):
    if a2 - b <= merge_gap_frames:
      out[b:a2] = True
  for a, b in runs(out):
    if b - a < min_segment_frames:
      out[a:b] = False
  return out


def speech_activity(audio: np.ndarray, sample_rate: int, *, rms_threshold: float = 0.02,
                    merge_gap_s: float = 0.2, min_segment_s: float = 0.08) -> np.ndarray:
  """bool `[ceil(samples / samples_per_frame)]`: 40 ms frames of `audio` (float32 `[samples]`) that carry speech."""
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1:
    raise ValueError(f"speech_activity: expected float audio [samples], got shape {audio.shape}")
  spf = int(round(sample_rate * FRAME_S))
  n = -(-audio.shape[0] // spf)
  padded = np.zeros(n * spf, np.float32)
  padded[:audio.shape[0]] = audio
  rms = np.sqrt(np.mean(padded.reshape(n, spf) ** 2, axis=1))
  return clean_activity(rms > rms_threshold, int(round(merge_gap_s / FRAME_S)),
                        int(round(min_segment_s / FRAME_S)))


def text_stream_words(slots: np.ndarray) -> tuple[Word, ...]:
  """Words of a text stream int32 `[units, text_slots]` (bytes, PAD, WORD_END, END_OF_TURN, MISSING).

  A word starts at the unit of its first byte and ends at the end of the unit of
  its WORD_END (an END_OF_TURN or the stream's end also closes it). Times in seconds.
  """
  slots = np.asarray(slots)
  if slots.ndim != 2:
    raise ValueError(f"text_stream_words: expected int [units, text_slots], got shape {slots.shape}")
  words, buf, first = [], bytearray(), -1

  def flush(unit):
    nonlocal buf, first
    text = buf.decode("utf-8", errors="replace").strip()
    if text:
      words.append(Word(text, first * UNIT_SECONDS, (unit + 1) * UNIT_SECONDS))
    buf, first = bytearray(), -1

  for u, row in enumerate(slots):
    for tok in row:
      tok = int(tok)
      if 0 <= tok < 256:
        if first < 0:
          first = u
        buf.append(tok)
      elif tok in (TextConfig.WORD_END, TextConfig.END_OF_TURN) and first >= 0:
        flush(u)
  if first >= 0:
    flush(slots.shape[0] - 1)
  return tuple(words)

