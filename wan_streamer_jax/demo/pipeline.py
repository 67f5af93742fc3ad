"""The demo chain: stages in order under one workdir, each skipped when its finished output exists.

    result = run_demo(QUICK, "/tmp/wan_demo")     # -> {"stages": {...}, "table": str, "workdir": ...}

Layout of `workdir` (one folder per stage; `DONE.json` is written last, atomically,
holding the stage's fingerprint (`DemoPlan.fingerprint`), its result and its time):

  corpus/        TFDS ArrayRecord corpus          audio_codec/, video_codec/   codec runs (Orbax, TB, eval.json)
  tokens/        token shards + manifest.json     transformer/                 Transformer run (Orbax, TB, metrics)
  own_history/   the Transformer fine-tuned on its own free-running streams (when the plan has the stage;
                 the evaluation and the stream then run this model)
  evaluate/      report.json, timelines/*.png     stream/                      stereo WAV, MP4, transcript, latency

A finished stage is skipped; an unfinished one is re-run and resumes from what
its library left there (training from the newest checkpoint, tokens per shard).
A finished stage of a different plan is refused (nothing written is replaced).
"""

from __future__ import annotations

import json
import os
import sys
import time

from wan_streamer_jax.config import ConfigError
from wan_streamer_jax.demo import stages
from wan_streamer_jax.demo.plan import DemoPlan
from wan_streamer_jax.evaluation import report

STAGES = ("corpus", "audio_codec", "video_codec", "tokens", "transformer", "own_history", "evaluate", "stream")


def _say(msg: str) -> None:
  from tqdm import tqdm
  tqdm.write(msg, file=sys.stdout)
  sys.stdout.flush()


def read_done(stage_dir: str) -> dict | None:
  try:
    with open(os.path.join(stage_dir, "DONE.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_done(stage_dir: str, record: dict) -> None:
  path = os.path.join(stage_dir, "DONE.json")
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=1, default=float)
  os.replace(path + ".tmp", path)


def run_demo(plan: DemoPlan, workdir: str, *, progress: bool = True, until: str | None = None) -> dict:
  """Runs (or skips) every stage up to `until` (default: all) -> {"stages", "skipped", "table", "workdir"}."""
  if until is not None and until not in STAGES:
    raise ConfigError(f"until: expected one of {', '.join(STAGES)}, got {until!r}")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  d = {name: os.path.join(workdir, name) for name in STAGES}
  calls = {
      "corpus": lambda: stages.run_corpus(plan, d["corpus"], progress),
      "audio_codec": lambda: stages.run_codec(plan, "audio", d["audio_codec"], d["corpus"], progress),
      "video_codec": lambda: stages.run_codec(plan, "video", d["video_codec"], d["corpus"], progress),
      "tokens": lambda: stages.run_tokens(plan, d["tokens"], d["corpus"], d["audio_codec"], d["video_codec"],
                                          progress),
      "transformer": lambda: stages.run_transformer(plan, d["transformer"], d["tokens"], progress),
      "own_history": lambda: stages.run_transformer(plan, d["own_history"], d["tokens"], progress,
                                                    init_from=d["transformer"]),
      "evaluate": lambda: stages.run_evaluate(plan, d["evaluate"], d["corpus"], d[plan.model_stage()],
                                              d["audio_codec"], d["video_codec"], d["tokens"], progress),
      "stream": lambda: stages.run_stream(plan, d["stream"], d["corpus"], d[plan.model_stage()],
                                          d["audio_codec"], d["video_codec"], progress),
  }
  results, skipped, t_all = {}, [], time.time()
  for i, name in enumerate(STAGES):
    if name == "own_history" and plan.own_history is None:
      _say(f"[{i + 1}/{len(STAGES)}] {name}: not in plan '{plan.name}'")
      if name == until:
        break
      continue
    fp = plan.fingerprint(name)
    done = read_done(d[name])
    if done is not None and done.get("fingerprint") != fp:
      raise ConfigError(f"{d[name]} holds a finished {name} stage of another demo plan (fingerprint "
                        f"{done.get('fingerprint')}, this plan's {fp}): use another --workdir, or delete that "
                        "folder to redo the stage")
    if done is not None:
      _say(f"[{i + 1}/{len(STAGES)}] {name}: done ({done['seconds']:.0f} s when run), skipped")
      results[name], skipped = done, skipped + [name]
    else:
      _say(f"[{i + 1}/{len(STAGES)}] {name}: running -> {d[name]}")
      os.makedirs(d[name], exist_ok=True)
      t0, c0 = time.time(), time.process_time()
      result = calls[name]()
      # CPU seconds of this process (all threads): on a shared machine, closer to an idle run's time
      results[name] = {"fingerprint": fp, "seconds": time.time() - t0, "cpu_seconds": time.process_time() - c0,
                       "result": result}
      _write_done(d[name], results[name])
      _say(f"[{i + 1}/{len(STAGES)}] {name}: finished in {results[name]['seconds']:.0f} s")
    if name == until:
      break
  table = headline_table(plan, results, workdir)
  summary = {"plan": plan.name, "workdir": workdir, "skipped": skipped, "seconds": time.time() - t_all,
             "stages": results, "table": table}
  with open(os.path.join(workdir, "demo_summary.json"), "w") as f:
    json.dump(summary, f, indent=1, default=float)
  return summary


def _fmt(x, digits: int = 3) -> str:
  if x is None:
    return "-"
  if isinstance(x, float):
    return f"{x:.{digits}g}"
  return str(x)


def headline_table(plan: DemoPlan, results: dict, workdir: str) -> str:
  """The closing table: headline figures of every finished stage, then where each output is."""
  r = {k: v["result"] for k, v in results.items()}
  secs = {k: (v.get("seconds"), v.get("cpu_seconds")) for k, v in results.items()}
  lines = []
  if plan.weak:
    lines += [f"NOTE: plan '{plan.name}' trains every stage for a few steps only; its figures are weak and do not",
              "show learning. The documented run is `python -m launch.demo` (no --quick).", ""]
  lines += ["| stage | headline figures | wall s | cpu s |", "|---|---|---|---|"]

  def row(stage: str, text: str) -> None:
    if stage in r:
      wall, cpu = secs.get(stage, (None, None))
      lines.append(f"| {stage} | {text} | {_fmt(wall, 3)} | {_fmt(cpu, 3)} |")

  if "corpus" in r:
    row("corpus", ", ".join(f"{k} {v}" for k, v in sorted(r["corpus"]["splits"].items())) + " conversations")
  for kind in ("audio", "video"):
    key = f"{kind}_codec"
    if key in r:
      ev = r[key]["eval"]
      keys = ("stoi", "mel_distance", "psnr", "ssim", "shape_colour_accuracy", "loss")
      row(key, f"{r[key]['steps']} steps; held-out " + ", ".join(
          f"{k} {_fmt(v)}" for k, v in ev.items() if any(k.startswith(p) for p in keys) and
          isinstance(v, (int, float))))
  if "tokens" in r:
    row("tokens", ", ".join(f"{k} {v}" for k, v in r["tokens"]["conversations"].items()) + " conversations")
  for stage in ("transformer", "own_history"):
    if stage not in r:
      continue
    t = r[stage]
    row(stage, f"{t['steps']} steps; train loss {_fmt(t['first_train'].get('loss'))} -> "
        f"{_fmt(t['last_train'].get('loss'))}; validation loss {_fmt(t['validation'].get('loss'))} (text_out "
        f"{_fmt(t['validation'].get('loss/text_out'))}, audio_out {_fmt(t['validation'].get('loss/audio_out'))}, "
        f"video_out {_fmt(t['validation'].get('loss/video_out'))}, text_in {_fmt(t['validation'].get('loss/text_in'))})"
        + (f"; heard-word bytes right {_fmt(t['hearing']['byte_accuracy'])} (answer words "
           f"{_fmt(t['hearing']['answer_byte_accuracy'])})" if "hearing" in t else "")
        + ("; answers teacher-forced colour / arithmetic / repeat " + " / ".join(
            _fmt(t["answers"][k]["answer_accuracy"]) for k in ("colour", "arithmetic", "repeat"))
           if "answers" in t else ""))
  if "evaluate" in r:
    probe = r["evaluate"].get("task_probe", {})
    row("evaluate", f"{r['evaluate']['dialogues']} held-out test dialogues; rows " +
        ", ".join(r["evaluate"]["headline"]) + " (table below)" + "".join(
            f"; task read at the decision unit, {context.replace('_', '-')}: {_fmt(p['accuracy'])} of "
            f"{p['events']} (story pauses {_fmt(p['story_pause'])})"
            for context, p in probe.items() if isinstance(p, dict) and p.get("events")))
  if "stream" in r:
    s = r["stream"]
    row("stream", f"{s['recording']}: {s['units']} units, step p50 {_fmt(s['latency'].get('step_ms_p50'))} ms "
        f"(160 ms budget), model speech rms {_fmt(s['model_audio_rms'])}")
  if "evaluate" in r:
    lines += ["", f"Behaviour on {r['evaluate']['dialogues']} held-out test dialogues (reference = the corpus' own "
              "model streams, the ceiling):", "", r["evaluate"]["table"]]
    checked = r["evaluate"].get("targets")
    if checked:
      lines += ["", "The documented run's targets (README), on these dialogues; Moshi's published figures are "
                "on other dialogues, for orientation only:", "",
                report.targets_table(checked)]
  lines += ["", "| output | where |", "|---|---|"]
  where = {"corpus": r.get("corpus", {}).get("data_dir"),
           "audio codec (samples/ WAV or PNG, tb/, eval.json)": r.get("audio_codec", {}).get("run_dir"),
           "video codec (samples/ WAV or PNG, tb/, eval.json)": r.get("video_codec", {}).get("run_dir"),
           "tokens": r.get("tokens", {}).get("token_dir"),
           "transformer run (checkpoints, metrics.jsonl, tb/)": r.get("transformer", {}).get("run_dir"),
           "own-history fine-tune (the evaluated model)": r.get("own_history", {}).get("run_dir"),
           "evaluation report": r.get("evaluate", {}).get("report"),
           "task probe (evaluation/task_probe.py)": r.get("evaluate", {}).get("task_probe", {}).get("file"),
           "timeline PNGs": os.path.dirname(r["evaluate"]["timelines"][0]) if r.get("evaluate", {}).get(
               "timelines") else None,
           "evaluated dialogues' stereo WAVs (user left, model right)": r.get("evaluate", {}).get("media_dir")}
  for k, v in r.get("stream", {}).get("files", {}).items():
    where[f"streamed dialogue: {k}"] = v
  where["this summary"] = os.path.join(workdir, "demo_summary.json")
  lines += [f"| {k} | {v} |" for k, v in where.items() if v]
  return "\n".join(lines)
