"""Settings of the behaviour evaluation (DESIGN §8), one frozen dataclass.

Kept apart from the model `Config`: the same thresholds score every model and
the reference row, whatever config produced the streams.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """Thresholds and windows of the Full-Duplex-Bench-style metrics (seconds unless named otherwise)."""

  # A takeover (Full-Duplex-Bench): model speech lasting >= takeover_min_speech_s, or more than
  # takeover_max_words words, inside the event's window.
  takeover_min_speech_s: float = 1.0
  takeover_max_words: int = 3
  # A backchannel (Full-Duplex-Bench): a model speech segment shorter than this, with at most
  # backchannel_max_words words.
  backchannel_max_s: float = 1.0
  backchannel_max_words: int = 2
  # Speech activity of a track: 40 ms frames whose RMS exceeds `speech_rms`; gaps up to
  # `merge_gap_s` inside speech are closed, segments shorter than `min_segment_s` dropped.
  speech_rms: float = 0.02
  merge_gap_s: float = 0.2
  min_segment_s: float = 0.08
  # Lip sync: lags of +-max_lag_frames (25 fps frames) are searched.
  max_lag_frames: int = 15
  # The speech judge (pocketsphinx, JSGF grammars of the corpus vocabulary).
  use_recognizer: bool = True

  def __post_init__(self):
    for name in ("takeover_min_speech_s", "backchannel_max_s", "speech_rms", "merge_gap_s", "min_segment_s"):
      if getattr(self, name) < 0:
        raise ValueError(f"EvalSettings.{name}: expected >= 0, got {getattr(self, name)!r}")
    for name in ("takeover_max_words", "backchannel_max_words", "max_lag_frames"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
        raise ValueError(f"EvalSettings.{name}: expected an int >= 0, got {getattr(self, name)!r}")
