"""The demo's stages, each a call into the library that owns it (no loop, format or writer lives here).

Each `run_*` takes the plan and its stage directory, does the stage (resuming
from whatever the owning library checkpointed there) and returns its JSON-able
result; `wan_streamer_jax/demo/pipeline.py` decides what to skip.

  corpus       data_pipelines.synthetic_builder (TFDS ArrayRecord)
  *_codec      codecs.train_task.codec_task + train.loop.train (Orbax; resumes mid-run)
  tokens       data_pipelines.token_data.write_split (checksummed shards; resumes per shard)
  transformer  train.transformer_task + train.loop.train (resumes mid-run)
  own_history  the same from the transformer's weights, on its own free-running streams (train/own_history.py)
  evaluate     evaluation.runner.evaluate (report.json, timeline PNGs)
  stream       streaming.driver.drive_recording + StreamRecorder.write (stereo WAV, MP4, transcript)
"""

from __future__ import annotations

import json
import os

import numpy as np

from wan_streamer_jax.config import ConfigError
from wan_streamer_jax.demo.plan import DemoPlan


class Interrupted(Exception):
  """A training stage stopped on SIGTERM / SIGINT after saving its checkpoint (a re-run resumes it)."""


def corpus_builder(plan: DemoPlan, corpus_dir: str):
  from data_pipelines.synthetic_builder import make_synthetic_builder
  return make_synthetic_builder(plan.model_config(), plan.corpus_size, data_dir=corpus_dir,
                                num_examples=dict(plan.corpus_counts), **plan.corpus_spec)


def _scalars(d: dict) -> dict:
  return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool))}


def run_corpus(plan: DemoPlan, stage_dir: str, progress: bool = True) -> dict:
  builder = corpus_builder(plan, stage_dir)
  builder.download_and_prepare()
  return {"data_dir": str(builder.data_dir),
          "splits": {name: split.num_examples for name, split in builder.info.splits.items()}}


def run_codec(plan: DemoPlan, kind: str, stage_dir: str, corpus_dir: str, progress: bool = True) -> dict:
  from wan_streamer_jax.codecs import training
  from wan_streamer_jax.codecs.train_task import codec_task
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train import loop
  cfg = plan.codec_run_config(kind)
  ct = cfg.codec_train
  builder = corpus_builder(plan, corpus_dir)
  train_src, eval_src = builder.as_data_source("train"), builder.as_data_source(ct.eval_split)
  if ct.cache_streams == "yes" or (ct.cache_streams == "auto" and kind == "audio"):
    train_src = training.StreamCache(train_src, kind)
  mesh = make_mesh(cfg.mesh, batch_size=cfg.train.batch_size)
  task = codec_task(cfg, mesh, train_src, eval_src,
                    data_info={"source": "corpus", "corpus": os.path.abspath(str(builder.data_dir))})
  summary = loop.train(task, workdir=stage_dir, progress=progress)
  if summary.stopped:
    raise Interrupted(f"{kind} codec stopped at step {summary.end_step}")
  final = dict(summary.final)
  if kind == "video":  # PSNR hides a dropped object: can the user's shape still be told by its colour?
    from wan_streamer_jax.evaluation.shape_colour import shape_colour_accuracy
    probe = shape_colour_accuracy(training.load_codec(stage_dir)[0], eval_src)
    final.update({"shape_colour_accuracy": probe["accuracy"], "shape_colour_frames": probe["frames"]})
  with open(os.path.join(stage_dir, "eval.json"), "w") as f:
    json.dump(final, f, indent=1, default=float)
  return {"run_dir": stage_dir, "steps": summary.end_step, "eval": _scalars(final)}


def run_tokens(plan: DemoPlan, stage_dir: str, corpus_dir: str, audio_dir: str, video_dir: str,
               progress: bool = True, shard_size: int = 64, chunk_units: int = 16) -> dict:
  from data_pipelines.tokenize_corpus import tokenize_corpus
  from wan_streamer_jax.codecs.training import load_codec
  (audio, _, a_step), (video, _, v_step) = load_codec(audio_dir), load_codec(video_dir)
  info = {"audio": {"checkpoint": audio_dir, "step": int(a_step)}, "video": {"checkpoint": video_dir, "step": int(v_step)}}
  res = tokenize_corpus(stage_dir, plan.model_config(), corpus_builder(plan, corpus_dir), audio, video, info,
                        shard_size=shard_size, chunk_units=chunk_units, progress=progress)
  return {"token_dir": stage_dir, "conversations": {split: r["conversations"] for split, r in res.items()}}


def _records(metrics_path: str, split: str) -> list[dict]:
  """A run's `metrics.jsonl` records of `split`, oldest first (a resumed run's included)."""
  if not os.path.exists(metrics_path):
    return []
  with open(metrics_path) as f:
    return [rec for rec in map(json.loads, f) if rec.get("split") == split]


def run_transformer(plan: DemoPlan, stage_dir: str, token_dir: str, progress: bool = True, *,
                    init_from: str | None = None) -> dict:
  """The `transformer` stage; with `init_from` (the transformer stage's dir) the `own_history` stage:
  `plan.own_history_config()` from those weights."""
  from data_pipelines import token_data
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train import loop
  from wan_streamer_jax.train.transformer_task import transformer_task
  cfg = plan.model_config() if init_from is None else plan.own_history_config()
  token_data.check_tokens_fit(token_dir, cfg)
  mesh = make_mesh(cfg.mesh, batch_size=cfg.train.batch_size)
  task = transformer_task(cfg, mesh, source=token_data.TokenDataSource(token_dir, "train"),
                          eval_source=token_data.TokenDataSource(token_dir, "validation"),
                          data_info={"source": "tokens", "token_dir": token_dir, "split": "train"})
  summary = loop.train(task, workdir=stage_dir, init_from=init_from, progress=progress)
  if summary.stopped:
    raise Interrupted(f"Transformer stopped at step {summary.end_step}")
  train_records = _records(os.path.join(stage_dir, "metrics.jsonl"), "train")  # the file: a resume's too
  out = {"run_dir": stage_dir, "steps": summary.end_step,
         "first_train": _scalars(train_records[0] if train_records else {}),
         "last_train": _scalars(train_records[-1] if train_records else {}),
         "validation": _scalars(summary.final)}
  # does it hear the user's words, does it know the answers? (validation, teacher-forced)
  out.update(probes(stage_dir, token_dir))
  return out


def probes(model_dir: str, token_dir: str, split: str = "validation") -> dict:
  """A trained Transformer's teacher-forced probes on a token split, from one load: "answers"
  (`evaluation.answer_probe.answer_knowledge`) and, with heard-word targets, "hearing"
  (`evaluation.hearing.heard_word_accuracy`)."""
  from flax import nnx
  from data_pipelines.token_data import TokenDataSource
  from wan_streamer_jax.evaluation.answer_probe import answer_knowledge
  from wan_streamer_jax.evaluation.hearing import heard_word_accuracy
  from wan_streamer_jax.train.checkpoint import load_model
  model, cfg, _, _ = load_model(model_dir, "transformer")
  forward = nnx.jit(lambda m, t, s, u: m(t, s, u))
  fn = lambda t, s, u: forward(model, t, s, u)  # noqa: E731
  source = TokenDataSource(token_dir, split)
  out = {"answers": answer_knowledge(fn, cfg, source)}
  if cfg.loss.text_in_target == "heard":
    out["hearing"] = heard_word_accuracy(fn, cfg, source)
  return out


def demo_engine(model_dir: str, audio_dir: str, video_dir: str, num_slots: int):
  """The streaming engine over the demo's trained Transformer and codecs, on one device
  (`export.checkpoints.load_engine`: the engine sampling defaults, the xla attention)."""
  from wan_streamer_jax.export.checkpoints import load_engine
  return load_engine(model_dir, audio_codec=audio_dir, video_codec=video_dir, num_slots=num_slots)[0]


def run_evaluate(plan: DemoPlan, stage_dir: str, corpus_dir: str, model_dir: str, audio_dir: str,
                 video_dir: str, token_dir: str, progress: bool = True) -> dict:
  from wan_streamer_jax.codecs.training import load_codec
  from wan_streamer_jax.evaluation import runner
  from wan_streamer_jax.evaluation.settings import EvalSettings
  from wan_streamer_jax.evaluation.task_probe import probe_headline
  cfg = plan.model_config()
  source = corpus_builder(plan, corpus_dir).as_data_source("test")
  examples = [source[i] for i in range(min(len(source), plan.eval_dialogues))]
  engine = demo_engine(model_dir, audio_dir, video_dir, plan.eval_slots)
  audio, _, _ = load_codec(audio_dir)
  result = runner.evaluate(examples, cfg, stage_dir, engine=engine, audio_codec=audio,
                           settings=EvalSettings(use_recognizer=plan.recognizer), plot=True, media=True,
                           mp4=plan.eval_mp4, progress=progress)
  probe = task_probe(plan, corpus_dir, token_dir, engine, examples, result["own_out_tokens"])
  path = os.path.join(stage_dir, "task_probe.json")
  with open(path, "w") as f:
    json.dump(probe, f, indent=1)
  return {"report": result["files"]["report"], "timelines": result["files"]["timelines"],
          "media_dir": os.path.join(stage_dir, "media"),
          "headline": result["headline"], "table": result["table"], "targets": result.get("targets"),
          "dialogues": len(examples), "task_probe": {"file": path, **probe_headline(probe)}}


def task_probe(plan: DemoPlan, corpus_dir: str, token_dir: str, engine, examples: list[dict], own: dict) -> dict:
  """`evaluation.task_probe.model_task_knowledge` of the engine's Transformer: the read-out fitted
  teacher-forced on the train split's first `task_probe.FIT_CONVERSATIONS` conversations, scored on the
  evaluated test `examples` teacher-forced and in the context the engine drew free-running (`own`: the
  evaluation's `own_out_tokens`)."""
  from wan_streamer_jax.evaluation.task_probe import FIT_CONVERSATIONS, model_task_knowledge
  train = corpus_builder(plan, corpus_dir).as_data_source("train")
  fit = [train[i] for i in range(min(len(train), FIT_CONVERSATIONS))]
  return model_task_knowledge(engine.model(), token_dir, fit, examples, own)


def run_stream(plan: DemoPlan, stage_dir: str, corpus_dir: str, model_dir: str, audio_dir: str,
               video_dir: str, progress: bool = True) -> dict:
  from tqdm import tqdm
  from wan_streamer_jax.streaming.driver import drive_recording
  from wan_streamer_jax.streaming.recording import from_conversation
  engine = demo_engine(model_dir, audio_dir, video_dir, 1)
  cfg = engine.cfg
  source = corpus_builder(plan, corpus_dir).as_data_source(plan.stream_split)
  if not 0 <= plan.stream_index < len(source):
    raise ConfigError(f"stream_index: expected an index in [0, {len(source)}) of the {plan.stream_split} split, "
                      f"got {plan.stream_index}")
  rec = from_conversation(source[plan.stream_index], cfg.audio.samples_per_unit)
  if plan.stream_max_units:
    rec = rec.truncated(plan.stream_max_units)
  with tqdm(total=rec.num_units, unit="unit", desc=f"stream {rec.name}", disable=not progress) as bar:
    report, recorder, _ = drive_recording(engine.step, engine.params, engine.init_state(seed=0), rec,
                                          silent_inputs=engine.silent_inputs(), seed=0, realtime=False,
                                          progress=lambda n: bar.update(n - bar.n))
  files = recorder.write(stage_dir, report, sample_rate=cfg.audio.sample_rate, mp4=True)
  audio = recorder.model_audio()
  return {"recording": rec.name, "units": recorder.num_units, "files": files,
          "model_audio_rms": float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0,
          "latency": _scalars(report.summary())}
