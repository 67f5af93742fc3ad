"""Full-Duplex-Bench's turn-taking metrics on a model timeline (DESIGN §8).

Per event (see `events.py`) one record; `summarise_*` turns records into the
headline figures. Definitions (Lin et al., Full-Duplex-Bench v1/v1.5):

- takeover in a window: the model speaks >= 1 s in it, or says more than 3 words;
- pause handling: takeover rate over the user's mid-turn pauses (lower is better);
- smooth turn-taking: takeover rate after the user's turn ends (higher is better)
  and latency = the model's first word start - the user's turn end, clipped at 0,
  over the events with a takeover;
- user interruption: stop latency = how long the model keeps talking after the
  user starts (0 when it is silent then), takeover rate after the interruption
  and its latency from the interruption's end;
- backchannels per second of the user's pauses: model speech segments shorter
  than 1 s with at most 2 words that start inside a pause.
"""

from __future__ import annotations

import numpy as np

from wan_streamer_jax.evaluation.events import DialogueEvents
from wan_streamer_jax.evaluation.settings import EvalSettings
from wan_streamer_jax.evaluation.timelines import SideTimeline


def is_takeover(model: SideTimeline, start: float, end: float, settings: EvalSettings) -> bool:
  """Whether the model takes the floor in `[start, end)` (s): enough speech or enough words."""
  return (model.speech_seconds(start, end) >= settings.takeover_min_speech_s - 1e-9
          or len(model.words_in(start, end)) > settings.takeover_max_words)


def first_word_latency(model: SideTimeline, start: float, end: float) -> float | None:
  """First model word overlapping `[start, end)` minus `start`, clipped at 0 (None: no word)."""
  for w in model.words:
    if w.end > start and w.start < end:
      return max(0.0, w.start - start)
  return None


def speech_onset_latency(model: SideTimeline, start: float, end: float) -> float | None:
  """First model speech inside `[start, end)` minus `start` (0 when already speaking; None: silent)."""
  onset = model.first_onset(start, end)
  return None if onset is None else onset - start


def score_events(model: SideTimeline, events: DialogueEvents, settings: EvalSettings) -> dict:
  """Per-event records of one dialogue: {"pauses": [...], "turn_ends": [...], "interruptions": [...]}."""
  pauses = []
  for p in events.pauses:
    backchannels = 0
    for a, b in model.segments():
      if p.start <= a < p.end and b - a < settings.backchannel_max_s and \
          len(model.words_in(a, b)) <= settings.backchannel_max_words:
        backchannels += 1
    pauses.append({"start_s": p.start, "pause_s": p.end - p.start,
                   "takeover": is_takeover(model, p.start, p.window_end, settings),
                   "backchannels": backchannels})
  ends = []
  for e in events.turn_ends:
    ends.append({"time_s": e.time, "task": e.task, "typed": e.typed,
                 "takeover": is_takeover(model, e.time, e.window_end, settings),
                 "latency_s": first_word_latency(model, e.time, e.window_end),
                 "speech_latency_s": speech_onset_latency(model, e.time, e.window_end)})
  interruptions = []
  for i in events.interruptions:
    seg = model.segment_at(i.start)
    talking = seg is not None
    stop = min(seg[1], i.window_end) - i.start if talking else 0.0
    interruptions.append({"start_s": i.start, "talking_at_barge_in": talking, "stop_latency_s": stop,
                          "takeover_after": is_takeover(model, i.end, i.window_end, settings),
                          "latency_after_s": first_word_latency(model, i.end, i.window_end)})
  return {"pauses": pauses, "turn_ends": ends, "interruptions": interruptions}


def _mean(xs) -> float | None:
  xs = [float(x) for x in xs]
  return float(np.mean(xs)) if xs else None


def _median(xs) -> float | None:
  xs = [float(x) for x in xs if x is not None]
  return float(np.median(xs)) if xs else None


def summarise(records: list[dict]) -> dict:
  """Headline figures over the per-dialogue records of `score_events` (counts included)."""
  pauses = [p for r in records for p in r["pauses"]]
  ends = [e for r in records for e in r["turn_ends"]]
  inter = [i for r in records for i in r["interruptions"]]
  taken = [e for e in ends if e["takeover"]]
  taken_i = [i for i in inter if i["takeover_after"]]
  pause_s = sum(p["pause_s"] for p in pauses)
  return {
      "pause_handling": {"n": len(pauses), "takeover_rate": _mean(p["takeover"] for p in pauses)},
      "backchannel": {"n_pauses": len(pauses), "pause_seconds": pause_s,
                      "per_second": (sum(p["backchannels"] for p in pauses) / pause_s) if pause_s else None},
      "turn_taking": {"n": len(ends), "takeover_rate": _mean(e["takeover"] for e in ends),
                      "median_latency_s": _median(e["latency_s"] for e in taken),
                      "mean_latency_s": _mean(e["latency_s"] for e in taken if e["latency_s"] is not None),
                      "median_speech_latency_s": _median(e["speech_latency_s"] for e in taken)},
      "interruption": {"n": len(inter), "talking_at_barge_in": _mean(i["talking_at_barge_in"] for i in inter),
                       "median_stop_latency_s": _median(i["stop_latency_s"] for i in inter),
                       "takeover_rate_after": _mean(i["takeover_after"] for i in inter),
                       "median_latency_after_s": _median(i["latency_after_s"] for i in taken_i)},
  }
