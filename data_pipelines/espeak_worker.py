"""eSpeak NG synthesis worker: a stand-alone process that forks once per utterance.

Why a separate process that forks: eSpeak NG keeps synthesis state in C
globals (pitch flutter index, wave phase, echo buffer, ...) that no API call
resets, so the same text spoken twice in one process gives different samples.
This worker initialises the library once and then `fork()`s a child for every
request; each child starts from the same pristine state, so the output is a
pure function of `(text, voice, rate, pitch, range, seed)` — across calls,
processes and machines with the same wheel. Forking here is safe because this
process is single-threaded (it never imports jax or grain); the parent that
uses it may be multi-threaded.

Run as `python espeak_worker.py` (by path; it imports only the standard
library and `espeakng_loader`). Protocol on stdin/stdout: each message is a
4-byte little-endian length followed by a pickle.
  hello (worker -> parent): {"sample_rate": int, "forks": bool}
  request: {"text": str, "voice": str, "rate": int, "pitch": int, "range": int, "seed": int}
  reply: {"samples": bytes (int16 little-endian mono), "words": [(char_pos, char_len, ms)], "error": str|None}
"""

from __future__ import annotations

import ctypes
import os
import pickle
import struct
import sys

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
EVENT_LIST_TERMINATED, EVENT_WORD = 0, 1
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4


class _Event(ctypes.Structure):
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class _Engine:
  """Thin ctypes binding of the eSpeak NG library shipped by `espeakng-loader`."""

  def __init__(self):
    import espeakng_loader
    self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
    self.lib.espeak_Initialize.restype = ctypes.c_int
    self.sample_rate = self.lib.espeak_Initialize(
        AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if self.sample_rate <= 0:
      raise RuntimeError(f"espeak_Initialize failed (returned {self.sample_rate})")
    self._chunks: list[bytes] = []
    self._words: list[tuple[int, int, int]] = []
    self._cb = _CALLBACK(self._on_audio)  # keep a reference: ctypes must not free it
    self.lib.espeak_SetSynthCallback(self._cb)

  def _on_audio(self, wav, num_samples, events):
    if num_samples > 0:
      self._chunks.append(ctypes.string_at(wav, num_samples * 2))
    i = 0
    while events[i].type != EVENT_LIST_TERMINATED:
      ev = events[i]
      if ev.type == EVENT_WORD:
        self._words.append((ev.text_position, ev.length, ev.audio_position))
      i += 1
    return 0

  def synth(self, req: dict) -> dict:
    lib = self.lib
    if lib.espeak_SetVoiceByName(req["voice"].encode()) != 0:
      raise ValueError(f"unknown eSpeak voice {req['voice']!r}")
    lib.espeak_SetParameter(PARAM_RATE, int(req["rate"]), 0)
    lib.espeak_SetParameter(PARAM_PITCH, int(req["pitch"]), 0)
    lib.espeak_SetParameter(PARAM_RANGE, int(req["range"]), 0)
    lib.espeak_SetParameter(PARAM_VOLUME, 100, 0)
    lib.espeak_ng_SetRandSeed(ctypes.c_long(int(req["seed"])))
    self._chunks.clear()
    self._words.clear()
    text = req["text"].encode("utf-8")
    status = lib.espeak_Synth(ctypes.c_char_p(text), len(text) + 1, 0, POS_CHARACTER, 0,
                              CHARS_UTF8, None, None)
    if status != 0:
      raise RuntimeError(f"espeak_Synth failed with status {status}")
    lib.espeak_Synchronize()
    return {"samples": b"".join(self._chunks), "words": list(self._words), "error": None}


def _read_msg(stream):
  head = stream.read(4)
  if len(head) < 4:
    return None
  (n,) = struct.unpack("<I", head)
  return pickle.loads(stream.read(n))


def _write_msg(stream, obj) -> None:
  data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
  stream.write(struct.pack("<I", len(data)) + data)
  stream.flush()


def _synth_in_child(engine: _Engine, req: dict) -> dict:
  """Forks; the child synthesises from the pristine state and pipes the reply back."""
  rfd, wfd = os.pipe()
  pid = os.fork()
  if pid == 0:  # child
    os.close(rfd)
    try:
      reply = engine.synth(req)
    except Exception as e:  # noqa: BLE001 — reported to the parent, never raised in the child
      reply = {"samples": b"", "words": [], "error": f"{type(e).__name__}: {e}"}
    with os.fdopen(wfd, "wb") as f:
      f.write(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    os._exit(0)
  os.close(wfd)
  with os.fdopen(rfd, "rb") as f:
    data = f.read()
  _, status = os.waitpid(pid, 0)
  if not data:
    return {"samples": b"", "words": [], "error": f"synthesis child exited with status {status}"}
  return pickle.loads(data)


def main() -> int:
  stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
  sys.stdout = sys.stderr  # nothing else may write to the protocol stream
  engine = _Engine()
  forks = hasattr(os, "fork")
  _write_msg(stdout, {"sample_rate": engine.sample_rate, "forks": forks})
  while True:
    req = _read_msg(stdin)
    if req is None:
      return 0
    if forks:
      reply = _synth_in_child(engine, req)
    else:  # no fork (Windows): correct speech, but not bit-reproducible
      try:
        reply = engine.synth(req)
      except Exception as e:  # noqa: BLE001
        reply = {"samples": b"", "words": [], "error": f"{type(e).__name__}: {e}"}
    _write_msg(stdout, reply)


if __name__ == "__main__":
  sys.exit(main())
