"""One evaluation row (a model, or the reference) from its per-dialogue scores; the headline table.

A row's summary holds every figure of DESIGN §8 with its counts; the
reference row (the corpus' own model streams played as the model) is the
ceiling each figure is read against, and Moshi's published Full-Duplex-Bench
v1.0 figures are given for orientation (different data: not comparable).
"""

from __future__ import annotations

import numpy as np

from wan_streamer_jax.evaluation import answers as answers_lib
from wan_streamer_jax.evaluation import turn_taking

# Full-Duplex-Bench v1.0 README, Moshi (orientation only: other dialogues, other judge).
MOSHI_FULL_DUPLEX_BENCH = {"pause_takeover_rate": 0.985, "turn_taking_takeover_rate": 0.941,
                           "turn_taking_latency_s": 0.265, "interruption_latency_s": 0.257}


def _finite_mean(xs) -> float | None:
  xs = [float(x) for x in xs if x is not None and np.isfinite(x)]
  return float(np.mean(xs)) if xs else None


def summarise_row(scores: list[dict]) -> dict:
  """Aggregates `score_dialogue` outputs of one row."""
  summary = {"dialogues": len(scores)}
  summary.update(turn_taking.summarise([s["turn_taking"] for s in scores]))
  summary["answers"] = answers_lib.summarise([a for s in scores for a in s["answers"]])
  lags = [s["lip_sync"]["best_lag"] for s in scores if s["lip_sync"]["best_lag"] is not None]
  summary["lip_sync"] = {
      "n": len(lags), "median_best_lag": float(np.median(lags)) if lags else None,
      "within_one_frame": float(np.mean(np.abs(lags) <= 1)) if lags else None,
      "mean_peak_correlation": _finite_mean(s["lip_sync"]["peak"] for s in scores),
      "mean_confidence": _finite_mean(s["lip_sync"]["confidence"] for s in scores)}
  replies = [r for s in scores for r in s["replies"]]
  summary["reply_speech"] = {"n": len(replies), "replied": _finite_mean(r["replied"] for r in replies),
                             "mean_log_mel_distance": _finite_mean(r["log_mel_distance"] for r in replies)}
  return summary


def headline(summary: dict) -> dict:
  """The figures of the README table, flat (None where a row has no events of that kind)."""
  a = summary["answers"]
  return {
      "pause_takeover_rate": summary["pause_handling"]["takeover_rate"],
      "backchannels_per_s": summary["backchannel"]["per_second"],
      "turn_taking_takeover_rate": summary["turn_taking"]["takeover_rate"],
      "turn_taking_median_latency_s": summary["turn_taking"]["median_latency_s"],
      "interruption_median_stop_latency_s": summary["interruption"]["median_stop_latency_s"],
      "interruption_takeover_rate_after": summary["interruption"]["takeover_rate_after"],
      **{f"{t}_text_accuracy": a[t]["text_accuracy"] for t in answers_lib.ANSWER_TASKS},
      **{f"{t}_speech_accuracy": a[t]["speech_accuracy"] for t in answers_lib.ANSWER_TASKS},
      "lip_sync_median_lag_frames": summary["lip_sync"]["median_best_lag"],
      "lip_sync_mean_peak": summary["lip_sync"]["mean_peak_correlation"],
      "reply_log_mel_distance": summary["reply_speech"]["mean_log_mel_distance"],
  }


def markdown_table(rows: dict[str, dict]) -> str:
  """A markdown table of `headline` figures: one column per row name (e.g. model, reference)."""
  names = list(rows)
  keys = list(next(iter(rows.values())))
  fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
  lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  lines += [f"| {k} | " + " | ".join(fmt(rows[n][k]) for n in names) + " |" for k in keys]
  return "\n".join(lines)


def targets(model: dict, reference: dict) -> dict:
  """The documented run's targets (README), checked on a model row's summary beside the reference row's.

  Returns name -> {"value", "target", "met", "reference"} (`met` None where the row has no events of
  that kind, or for a figure shown only as context; `reference` the reference row's same figure).
  """
  def check(get, target: str, ok, n=None) -> dict:  # ok None: shown for context, not a target
    value = get(model)
    return {"value": value, "target": target, "met": None if value is None or ok is None else bool(ok(value)),
            "reference": get(reference), "n": None if n is None else n(model)}

  pauses, ends = (lambda s: s["pause_handling"]["n"]), (lambda s: s["turn_taking"]["n"])
  inter, lips = (lambda s: s["interruption"]["n"]), (lambda s: s["lip_sync"]["n"])

  def latency_gap(row):
    m, r = row["turn_taking"]["median_latency_s"], reference["turn_taking"]["median_latency_s"]
    return None if m is None or r is None else m - r

  out = {
      "pause_takeover_rate": check(lambda s: s["pause_handling"]["takeover_rate"], "<= 0.2", lambda v: v <= 0.2,
                                   pauses),
      "turn_taking_takeover_rate": check(lambda s: s["turn_taking"]["takeover_rate"], ">= 0.9", lambda v: v >= 0.9,
                                         ends),
      "turn_taking_median_latency_s": check(lambda s: s["turn_taking"]["median_latency_s"],
                                            "context for the row below", None, ends),
      "turn_taking_latency_vs_reference_s": check(latency_gap, "within 0.16 s of the reference",
                                                  lambda v: abs(v) <= 0.16 + 1e-9, ends),
      "interruption_median_stop_latency_s": check(lambda s: s["interruption"]["median_stop_latency_s"],
                                                  "<= 0.48 s", lambda v: v <= 0.48 + 1e-9, inter),
      # A model silent at the barge-in "stops" in 0 s: this says how many of the stops were real.
      "interruption_talking_at_barge_in": check(lambda s: s["interruption"]["talking_at_barge_in"],
                                                "context for the row above", None, inter),
      # Full-Duplex-Bench's "interruption latency": how fast the model answers once the user has finished.
      "interruption_median_latency_after_s": check(lambda s: s["interruption"]["median_latency_after_s"],
                                                   "context (FD-Bench's interruption latency)", None, inter),
      "lip_sync_median_lag_frames": check(lambda s: s["lip_sync"]["median_best_lag"], "0 +- 1",
                                          lambda v: abs(v) <= 1, lips),
      "lip_sync_mean_peak": check(lambda s: s["lip_sync"]["mean_peak_correlation"], ">= 0.5", lambda v: v >= 0.5,
                                  lips),
  }
  for task, floor in (("colour", 0.8), ("arithmetic", 0.3), ("repeat", 0.3)):
    out[f"{task}_text_accuracy"] = check(lambda s, t=task: s["answers"][t]["text_accuracy"], f">= {floor}",
                                         lambda v, f=floor: v >= f, lambda s, t=task: s["answers"][t]["n"])
    out[f"{task}_text_chance"] = check(lambda s, t=task: s["answers"][t]["chance"]["majority"],
                                       "chance (always the commonest answer)", None)
    r = reference["answers"][task]["speech_accuracy"]
    out[f"{task}_speech_vs_reference"] = check(
        lambda s, t=task: (None if s["answers"][t]["speech_accuracy"] is None or not r
                           else s["answers"][t]["speech_accuracy"] / r),
        ">= 0.5 (model / reference recogniser rate)", lambda v: v >= 0.5, lambda s, t=task: s["answers"][t]["n"])
  return out


# Which Moshi Full-Duplex-Bench figure (if any) sits beside each target.
_MOSHI_BESIDE = {"pause_takeover_rate": "pause_takeover_rate", "turn_taking_takeover_rate": "turn_taking_takeover_rate",
                 "turn_taking_median_latency_s": "turn_taking_latency_s",
                 "interruption_median_latency_after_s": "interruption_latency_s"}


def targets_table(checked: dict) -> str:
  """A markdown table of `targets()`: model value, target, met, the reference row's value, Moshi's."""
  fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
  lines = ["| figure | events | model | wanted | met | reference | Moshi (FDB v1.0) |", "|---|---|---|---|---|---|---|"]
  for name, t in checked.items():
    met = "-" if t["met"] is None else "yes" if t["met"] else "**no**"
    moshi = MOSHI_FULL_DUPLEX_BENCH.get(_MOSHI_BESIDE.get(name, ""))
    lines.append(f"| {name} | {fmt(t.get('n'))} | {fmt(t['value'])} | {t['target']} | {met} | {fmt(t.get('reference'))} | {fmt(moshi)} |")
  return "\n".join(lines)
