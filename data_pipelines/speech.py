"""Speech from eSpeak NG (the `espeakng-loader` wheel), with word timings.

`SpeechSynthesizer(sample_rate).say(text, voice)` returns an `Utterance`:
float32 mono audio in [-1, 1] at `sample_rate` (resampled from eSpeak's
22050 Hz with `scipy.signal.resample_poly`), leading/trailing silence trimmed,
peak-normalised to `PEAK`, and per-word `(start, end)` sample offsets taken
from eSpeak's word events (end = last voiced sample before the next word).

Synthesis runs in `espeak_worker.py` (a separate single-threaded process that
forks per utterance), which makes the samples a pure function of the request:
the same text and voice give identical bytes in any process. Results are
cached per `(text, voice)` in this process.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import math
import os
import pickle
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Sequence

import numpy as np
from scipy import signal

PEAK = 0.7  # utterance peak amplitude after normalisation
_TRIM_THRESHOLD = 0.02  # fraction of the peak below which edges count as silence
_MARGIN_S = 0.01  # kept around trimmed speech


@dataclasses.dataclass(frozen=True)
class Voice:
  """An eSpeak NG voice: `name` like "en-us+m3", rate in words/min, pitch and range 0..100."""

  name: str
  rate: int = 175
  pitch: int = 50
  pitch_range: int = 50


# One fixed model voice (the avatar's); several user voices (accents, variants, rates, pitches).
MODEL_VOICE = Voice("en-us+f5", rate=185, pitch=55, pitch_range=60)
USER_VOICES = (
    Voice("en-us+m3", rate=160, pitch=40),
    Voice("en-gb-x-rp+m7", rate=175, pitch=35),
    Voice("en+f3", rate=170, pitch=65),
    Voice("en-us+f4", rate=190, pitch=70, pitch_range=70),
    Voice("en-gb-scotland+m2", rate=150, pitch=45),
    Voice("en-029+f2", rate=165, pitch=60),
    Voice("en-us-nyc+m5", rate=200, pitch=50),
    Voice("en-us+klatt", rate=170, pitch=45),
)


@dataclasses.dataclass(frozen=True)
class Word:
  text: str
  start: int  # first sample (at the utterance's sample rate), inclusive
  end: int  # last voiced sample + 1


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One spoken phrase: `audio` float32 `[samples]` in [-1, 1] at `sample_rate`."""

  text: str
  voice: Voice
  audio: np.ndarray
  words: tuple[Word, ...]
  sample_rate: int

  @property
  def num_samples(self) -> int:
    return int(self.audio.shape[0])

  @property
  def duration(self) -> float:
    return self.num_samples / self.sample_rate


def frame_envelope(audio: np.ndarray, samples_per_frame: int) -> np.ndarray:
  """RMS per frame: float32 `[ceil(samples / samples_per_frame)]` (the last frame zero-padded)."""
  n = -(-audio.shape[0] // samples_per_frame)
  padded = np.zeros(n * samples_per_frame, np.float32)
  padded[:audio.shape[0]] = audio
  return np.sqrt(np.mean(padded.reshape(n, samples_per_frame) ** 2, axis=1)).astype(np.float32)


def _worker_path() -> str:
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "espeak_worker.py")


class SpeechSynthesizer:
  """Client of the eSpeak worker process; thread-safe; use as a context manager or `close()`."""

  def __init__(self, sample_rate: int, cache_size: int = 4096):
    self.sample_rate = int(sample_rate)
    self._cache: collections.OrderedDict = collections.OrderedDict()
    self._cache_size = cache_size
    self._lock = threading.Lock()
    self._proc = None
    self.engine_rate = None
    self.deterministic = None

  @property
  def num_cached(self) -> int:
    return len(self._cache)

  def _start(self) -> None:
    from data_pipelines.media_io import fork_exec_ok
    with fork_exec_ok():  # fork + exec of a fresh interpreter: safe beside JAX's threads
      self._proc = subprocess.Popen([sys.executable, "-u", _worker_path()], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, close_fds=True)
    hello = self._recv()
    if hello is None:
      raise RuntimeError("the eSpeak worker failed to start (see its stderr above); is the "
                         "`espeakng-loader` wheel installed?")
    self.engine_rate = int(hello["sample_rate"])
    self.deterministic = bool(hello["forks"])
    g = math.gcd(self.sample_rate, self.engine_rate)
    self._up, self._down = self.sample_rate // g, self.engine_rate // g

  def _send(self, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    self._proc.stdin.write(struct.pack("<I", len(data)) + data)
    self._proc.stdin.flush()

  def _recv(self):
    head = self._proc.stdout.read(4)
    if len(head) < 4:
      return None
    (n,) = struct.unpack("<I", head)
    return pickle.loads(self._proc.stdout.read(n))

  def close(self) -> None:
    with self._lock:
      if self._proc is not None:
        self._proc.stdin.close()
        self._proc.wait(timeout=10)
        self._proc.stdout.close()
        self._proc = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def say(self, text: str, voice: Voice) -> Utterance:
    """Synthesises `text` (ASCII/UTF-8 words) with `voice`; cached and deterministic."""
    key = (text, voice)
    with self._lock:
      hit = self._cache.get(key)
      if hit is not None:
        self._cache.move_to_end(key)
        return hit
      if self._proc is None:
        self._start()
      seed = zlib.crc32(repr(key).encode()) & 0x7FFFFFFF
      self._send({"text": text, "voice": voice.name, "rate": voice.rate, "pitch": voice.pitch,
                  "range": voice.pitch_range, "seed": seed})
      reply = self._recv()
      if reply is None:
        self._proc = None
        raise RuntimeError(f"the eSpeak worker died while saying {text!r}")
      if reply["error"]:
        raise RuntimeError(f"eSpeak failed on {text!r} with voice {voice}: {reply['error']}")
      utt = self._postprocess(text, voice, reply)
      self._cache[key] = utt
      if len(self._cache) > self._cache_size:
        self._cache.popitem(last=False)
      return utt

  def say_in_parts(self, parts: Sequence[str], voice: Voice) -> Utterance:
    """`parts` synthesised one by one and joined (each trimmed and peak-normalised on its own): the
    audio of a part depends on nothing said after it. A whole sentence from eSpeak does not have
    that property: its intonation and its peak normalisation read the whole sentence, so e.g. the
    "the shape is" of "the shape is purple." differs from the one before "red" (RMS 0.2-0.45 of the
    signal; a gain of 0.77-1.08 between them), and the "I" of "I cannot see you" from the "I" of "I
    see a red square". A causal speaker (the model, one unit at a time) cannot say the former
    without having chosen what follows; a corpus made of such sentences lets teacher forcing read
    the answer off the reply's own voice before it is due. Said word by word (`parts` = the words;
    `CorpusSpec.word_by_word_replies`), a word's voice depends on no word after it."""
    utts = [self.say(p, voice) for p in parts]
    words, offset = [], 0
    for u in utts:
      words += [Word(w.text, w.start + offset, w.end + offset) for w in u.words]
      offset += u.num_samples
    audio = np.concatenate([u.audio for u in utts]).astype(np.float32)
    audio.setflags(write=False)
    return Utterance(text=" ".join(parts), voice=voice, audio=audio, words=tuple(words),
                     sample_rate=self.sample_rate)

  def _postprocess(self, text: str, voice: Voice, reply: dict) -> Utterance:
    raw = np.frombuffer(reply["samples"], "<i2").astype(np.float32) / 32768.0
    if raw.size == 0 or not np.any(raw):
      raise RuntimeError(f"eSpeak produced no audio for {text!r}")
    audio = signal.resample_poly(raw, self._up, self._down).astype(np.float32)
    sr = self.sample_rate
    # Trim silence on both ends (10 ms frames above a fraction of the peak).
    hop = max(1, sr // 100)
    env = frame_envelope(audio, hop)
    voiced = np.nonzero(env > _TRIM_THRESHOLD * env.max())[0]
    margin = int(_MARGIN_S * sr)
    lo = max(0, voiced[0] * hop - margin)
    hi = min(audio.shape[0], (voiced[-1] + 1) * hop + margin)
    audio = audio[lo:hi]
    audio *= PEAK / max(np.abs(audio).max(), 1e-6)
    env = frame_envelope(audio, hop)
    active = env > _TRIM_THRESHOLD * env.max()
    spans, starts = _word_starts(text, reply["words"], sr, lo, audio.shape[0])
    words = []
    for i, (word, start) in enumerate(zip(spans, starts)):
      stop = starts[i + 1] if i + 1 < len(starts) else audio.shape[0]
      stop = max(stop, start + 1)
      frames = np.nonzero(active[start // hop: -(-stop // hop)])[0]
      end = min(stop, start // hop * hop + (frames[-1] + 1) * hop) if frames.size else stop
      words.append(Word(word, int(start), int(max(end, start + 1))))
    audio.setflags(write=False)
    return Utterance(text=text, voice=voice, audio=audio, words=tuple(words), sample_rate=sr)


def _word_starts(text: str, events, sr: int, offset: int, num_samples: int):
  """The whitespace-separated words of `text` and their start samples.

  eSpeak reports word events by character position, but merges some words
  ("I am" is one event); a word without its own event starts between its
  neighbours' starts, in proportion to characters.
  """
  words, char_starts, pos = [], [], 0
  for word in text.split():
    pos = text.index(word, pos)
    words.append(word)
    char_starts.append(pos)
    pos += len(word)
  known: dict[int, int] = {}
  for char_pos, _, ms in events:
    c = char_pos - 1
    i = int(np.searchsorted(char_starts, c, side="right")) - 1
    if 0 <= i < len(words) and c < char_starts[i] + len(words[i]) and i not in known:
      known[i] = min(max(int(round(ms * sr / 1000.0)) - offset, 0), num_samples - 1)
  known.setdefault(0, 0)
  anchors = sorted(known)
  anchor_chars = [char_starts[i] for i in anchors] + [len(text)]
  anchor_samples = [known[i] for i in anchors] + [num_samples]
  starts = [int(np.interp(char_starts[i], anchor_chars, anchor_samples)) if i not in known else known[i]
            for i in range(len(words))]
  starts = list(np.maximum.accumulate(starts)) if starts else []
  return words, [int(s) for s in starts]


_SHARED: dict[int, SpeechSynthesizer] = {}
_SHARED_LOCK = threading.Lock()


def get_synthesizer(sample_rate: int) -> SpeechSynthesizer:
  """A process-wide synthesizer per sample rate (closed at exit)."""
  with _SHARED_LOCK:
    if sample_rate not in _SHARED:
      _SHARED[sample_rate] = SpeechSynthesizer(sample_rate)
    return _SHARED[sample_rate]


@atexit.register
def _close_shared() -> None:
  for synth in _SHARED.values():
    try:
      synth.close()
    except Exception:  # noqa: BLE001 — best effort at interpreter exit
      pass
