"""Scores one dialogue: a corpus example (the user's script, the reference) + the model's streams.

`score_dialogue` returns a JSON-ready dict of per-event records (turn-taking,
answers, reply speech) and the dialogue's lip sync; `summarise_rows` (report.py)
aggregates them. The model's timeline: speech activity from its audio, words
from its text stream.
"""

from __future__ import annotations

import numpy as np

from wan_streamer_jax.config import UNIT_SECONDS
from wan_streamer_jax.evaluation import answers as answers_lib
from wan_streamer_jax.evaluation import lip_sync, turn_taking
from wan_streamer_jax.evaluation.events import DialogueEvents, events_from_metadata
from wan_streamer_jax.evaluation.settings import EvalSettings
from wan_streamer_jax.evaluation.streams import ModelStreams
from wan_streamer_jax.evaluation.timelines import SideTimeline, speech_activity, text_stream_words

REPLY_BUCKET_S = 4 * UNIT_SECONDS  # reply windows are whole multiples of this (few log-mel shapes)


def _as_str(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


def audio_timeline(audio: np.ndarray, text: np.ndarray | None, sample_rate: int,
                   settings: EvalSettings) -> SideTimeline:
  """A side's timeline: speech from `audio` float32 `[samples]`, words from `text` int32 `[U, slots]`."""
  speech = speech_activity(audio, sample_rate, rms_threshold=settings.speech_rms,
                           merge_gap_s=settings.merge_gap_s, min_segment_s=settings.min_segment_s)
  return SideTimeline(speech, text_stream_words(text) if text is not None else ())


def _clip(audio: np.ndarray, start: float, length: float, sample_rate: int) -> np.ndarray:
  """float32 `[round(length * rate)]`: `audio` from `start` s, zeros where the window leaves the audio."""
  a, n = int(round(start * sample_rate)), int(round(length * sample_rate))
  out = np.zeros(n, np.float32)
  lo, hi = max(a, 0), min(a + n, audio.shape[0])
  if hi > lo:
    out[lo - a: hi - a] = audio[lo:hi]
  return out


def reply_distances(model: SideTimeline, model_audio: np.ndarray, reference_audio: np.ndarray,
                    events: DialogueEvents, sample_rate: int) -> list[dict]:
  """Log-mel distance of the model's reply to the reference reply, per turn end.

  The model's reply is taken from the start of the unit of its first speech
  after the user's turn end (the model speaks in whole units; the reference
  reply's start when it stays silent), over the reference reply's length
  rounded up to `REPLY_BUCKET_S`.
  """
  from wan_streamer_jax.codecs.metrics import log_mel_distance
  out = []
  for e in events.turn_ends:
    if e.reference_reply is None:
      continue
    r0, r1 = e.reference_reply
    length = float(np.ceil((r1 - r0) / REPLY_BUCKET_S - 1e-9) * REPLY_BUCKET_S)
    onset = model.first_onset(e.time, e.window_end)
    if onset is not None:
      onset = np.floor(onset / UNIT_SECONDS + 1e-9) * UNIT_SECONDS
    est = _clip(model_audio, r0 if onset is None else onset, length, sample_rate)
    ref = _clip(reference_audio, r0, length, sample_rate)
    out.append({"time_s": e.time, "replied": onset is not None,
                "log_mel_distance": log_mel_distance(est, ref, sample_rate)})
  return out


def score_answers(model: SideTimeline, model_audio: np.ndarray, events: DialogueEvents, sample_rate: int,
                  judge=None) -> list[dict]:
  """Per answer event: found in the text stream? in the speech (recogniser; None without a judge)?"""
  out = []
  for a in events.answers:
    said = [w.text for w in model.words_in(a.question_end, a.window_end)]
    rec = {"task": a.task, "answer": a.answer, "text_words": said,
           "text_correct": answers_lib.contains_answer(said, a.answer)}
    if judge is not None:
      spoken = [s for s in model.segments() if s[1] > a.question_end and s[0] < a.window_end]
      if spoken:
        lo, hi = max(spoken[0][0], a.question_end), min(spoken[-1][1], a.window_end)
        heard = judge.transcribe(_clip(model_audio, lo - 0.05, hi - lo + 0.1, sample_rate), a.task)
      else:
        heard = []
      rec.update(heard_words=heard, speech_correct=answers_lib.contains_answer(heard, a.answer))
    out.append(rec)
  return out


def score_dialogue(example: dict, streams: ModelStreams, sample_rate: int, settings: EvalSettings,
                   judge=None) -> dict:
  """Everything measured on one dialogue (JSON-ready)."""
  num_units = int(example["num_units"])
  spu = int(round(sample_rate * UNIT_SECONDS))
  if streams.audio.shape[0] != num_units * spu:
    raise ValueError(f"score_dialogue: model audio has {streams.audio.shape[0]} samples, expected "
                     f"num_units * samples_per_unit = {num_units * spu}")
  events = events_from_metadata(_as_str(example["metadata"]), num_units * UNIT_SECONDS)
  model = audio_timeline(streams.audio, streams.text, sample_rate, settings)
  lips = lip_sync.avatar_lip_sync(streams.video, streams.audio, spu, settings.max_lag_frames)
  return {
      "conversation_id": _as_str(example["conversation_id"]), "task": _as_str(example["task"]),
      "num_units": num_units,
      "turn_taking": turn_taking.score_events(model, events, settings),
      "answers": score_answers(model, streams.audio, events, sample_rate, judge),
      "replies": reply_distances(model, streams.audio, np.asarray(example["model_audio"], np.float32), events,
                                 sample_rate),
      "lip_sync": {k: lips[k] for k in ("best_lag", "peak", "confidence")},
      "model_text": [w.text for w in model.words],
  }

