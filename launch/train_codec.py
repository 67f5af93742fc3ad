"""Train a causal codec on the corpus' raw windows.

    python -m launch.make_dataset --config=configs/small.py --size=small --data_dir=DATA
    python -m launch.train_codec --config=configs/codec_audio_small.py --data_dir=DATA --workdir=runs/codec_audio_small
    python -m launch.train_codec --config=configs/codec_video_small.py --data_dir=DATA --workdir=runs/codec_video_small

The codec kind comes from `--codec` or the config name (`codec_audio_*`,
`codec_video_*`). `--data=synthetic` trains on generated tones / moving
squares (smoke runs without a corpus). Writes into `--workdir`:
  checkpoints/   Orbax: params, optimizer, data-iterator state, config (resumes from the latest;
                 a SIGTERM saves before exiting)
  tb/            TensorBoard scalars (loss parts, grad norm, perplexity per quantiser, steps/s)
                 and audio / image samples of the final evaluation
  eval.json      held-out metrics of the final codec (validation split)
"""

from __future__ import annotations

import json
import os
import signal
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/codec_audio_small.py", "Codec run config file.")
_CODEC = flags.DEFINE_enum("codec", None, ["audio", "video"], "Codec to train (default: from the config name).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default /tmp/codec_runs/<config name>).")
_DATA = flags.DEFINE_enum("data", "corpus", ["corpus", "synthetic"], "Training windows source.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding the synthetic dialogue corpus.")
_SIZE = flags.DEFINE_enum("corpus_size", "small", ["tiny", "small", "full"], "Corpus size to read.")
_ROLE = flags.DEFINE_enum("role", "mixed", ["mixed", "user", "model"], "Which streams training windows come from.")
_EVAL_WINDOWS = flags.DEFINE_integer("eval_windows", 64, "Held-out windows for the final evaluation.")
_EVAL_UNITS = flags.DEFINE_integer("eval_units", 25, "Units per evaluation window (25 = 4 s).")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 0, "Also evaluate (eval_windows // 4 windows) every N steps; 0 = only at the end.")
_EVAL_SPLIT = flags.DEFINE_enum("eval_split", "validation", ["validation", "test"], "Held-out split to evaluate on.")
_EVAL_ROLE = flags.DEFINE_enum("eval_role", "mixed", ["mixed", "user", "model"], "Evaluation windows' streams.")
_OVERSAMPLE = flags.DEFINE_integer(
    "speech_oversample", 2, "Audio: draw this many times the batch of windows and train on the most "
    "speech-active ones (the corpus is mostly silence at any one time).")
_CACHE = flags.DEFINE_bool("cache_streams", None, "Keep the trained codec's streams of every training "
                            "conversation in memory after the first read (default: audio only, ~1.5 MB per "
                            "conversation; video would take ~7 MB per 64x64 conversation).")
_THREADS = flags.DEFINE_integer("data_threads", 1, "Grain read threads.")
_VOICES = flags.DEFINE_enum("train_voices", "classic", ["classic", "train"],
                            "Audio: the training corpus' user voices (`train`: the corpus built with "
                            "make_dataset --user_voices=train; evaluation stays on the classic corpus).")
_AUGMENT = flags.DEFINE_bool("augment", False, "Audio: augment training windows (data_pipelines.augment: "
                             "reverb, noise incl. babble, EQ/band limits, gain, clipping).")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", 1, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", 0, "This process's index (multi-host).")

_STOP = {"flag": False}


def _kind(cfg) -> str:
  if _CODEC.value:
    return _CODEC.value
  for k in ("audio", "video"):
    if k in cfg.name:
      return k
  raise ValueError(f"cannot tell the codec kind from config name {cfg.name!r}: pass --codec=audio|video")


def _sources(cfg, kind: str):
  if _DATA.value == "synthetic":
    from wan_streamer_jax.codecs.synthetic import SyntheticSignalSource
    return (SyntheticSignalSource(cfg, 256, seed=0),
            SyntheticSignalSource(cfg, 32, seed=1 if _EVAL_SPLIT.value == "validation" else 2))
  from data_pipelines.synthetic_builder import make_synthetic_builder
  from wan_streamer_jax.codecs.training import StreamCache
  builders = {}
  for voices in {_VOICES.value, "classic"}:
    builders[voices] = make_synthetic_builder(cfg, _SIZE.value, data_dir=_DATA_DIR.value, user_voices=voices)
    if not builders[voices].is_prepared():
      raise ValueError(f"no {_SIZE.value} corpus for {cfg.name} under {builders[voices].data_dir}; build it "
                       f"with: python -m launch.make_dataset --config=<model config> --size={_SIZE.value} "
                       f"--user_voices={voices} --data_dir={_DATA_DIR.value or '~/tensorflow_datasets'}")
  train = builders[_VOICES.value].as_data_source("train")
  cache = _CACHE.value if _CACHE.value is not None else kind == "audio"
  return (StreamCache(train, kind) if cache else train), builders["classic"].as_data_source(_EVAL_SPLIT.value)


def _add_wav(tb, tag: str, wave, sample_rate: int, step: int) -> None:
  """TensorBoard audio summary from a float waveform (WAV-encoded here: no soundfile dependency)."""
  import io
  import wave as wavelib
  import numpy as np
  from tensorboardX.proto.summary_pb2 import Summary
  pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2")
  buf = io.BytesIO()
  with wavelib.open(buf, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(sample_rate)
    w.writeframes(pcm.tobytes())
  audio = Summary.Audio(sample_rate=sample_rate, num_channels=1, length_frames=len(pcm),
                        encoded_audio_string=buf.getvalue(), content_type="audio/wav")
  tb.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, audio=audio)]), step)


def main(argv):
  del argv
  from wan_streamer_jax.parallel import multihost
  multihost.initialize(_COORD.value, _NPROC.value, _PID.value)

  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  import grain
  from flax import nnx
  from tensorboardX import SummaryWriter
  from tqdm import tqdm

  from data_pipelines.pipelines import raw_pipeline
  from wan_streamer_jax.codecs import training
  from wan_streamer_jax.config import Config
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train.feed import process_slice, to_global
  from wan_streamer_jax.train.optimizer import make_optimizer

  cfg = Config.from_dict(_CONFIG.value)
  kind = _kind(cfg)
  ccfg = training.codec_config(cfg, kind)
  workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value or f"/tmp/codec_runs/{cfg.name}"))
  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh(cfg.mesh)
  lead = jax.process_index() == 0
  logging.info("%s codec %s: %.0f bps, mesh %s", kind, cfg.name, ccfg.bitrate_bps, dict(mesh.shape))

  codec = training.create_codec(cfg, kind, cfg.train.seed)
  graphdef, params = nnx.split(codec)
  tx = make_optimizer(cfg.optimizer)
  rep = training.replicated(mesh)
  params = jax.device_put(params, rep)
  opt_state = jax.device_put(tx.init(params), rep)
  step_fn = training.make_train_step(kind, cfg, graphdef, tx, mesh, params, opt_state)

  train_src, val_src = _sources(cfg, kind)
  rows = process_slice(cfg.train.batch_size)
  local_bs = rows.stop - rows.start
  over = max(1, _OVERSAMPLE.value) if kind == "audio" else 1
  augment = None
  if _AUGMENT.value and kind == "audio":
    from data_pipelines.augment import BabbleSource, CodecAugment
    babble = BabbleSource(train_src, cfg.train.units_per_example * ccfg.samples_per_unit) if _DATA.value == "corpus" else None
    augment = CodecAugment(ccfg.sample_rate, babble)
  data_it = iter(raw_pipeline(train_src, cfg, units=cfg.train.units_per_example, batch_size=local_bs * over,
                              seed=cfg.train.seed, role=_ROLE.value, num_threads=_THREADS.value, prefetch=4,
                              window_map=augment))

  n_steps = cfg.train.num_steps
  every = cfg.train.checkpoint_every or n_steps
  mgr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), options=ocp.CheckpointManagerOptions(
      max_to_keep=cfg.train.checkpoints_to_keep, enable_async_checkpointing=True))
  start = 0
  if mgr.latest_step() is not None:
    start = mgr.latest_step()
    abstract = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), t)  # noqa
    r = mgr.restore(start, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract(params)), opt=ocp.args.StandardRestore(abstract(opt_state)),
        data=grain.checkpoint.CheckpointRestore(data_it)))
    params, opt_state = r.params, r.opt
    logging.info("resumed from step %d", start)

  def save(step):
    mgr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), opt=ocp.args.StandardSave(opt_state),
        data=grain.checkpoint.CheckpointSave(data_it),
        config=ocp.args.JsonSave({"kind": kind, "config": cfg.to_dict()})), force=True)

  def run_eval(params, windows):
    codec = nnx.merge(graphdef, jax.device_get(params))
    val_it = raw_pipeline(val_src, cfg, units=_EVAL_UNITS.value, batch_size=8, seed=1, shuffle=False,
                          num_epochs=1, role=_EVAL_ROLE.value, process_index=0, process_count=1,
                          drop_remainder=False)
    batches = (b for _, b in zip(range(max(1, -(-windows // 8))), val_it))
    return training.evaluate(kind, codec, batches)

  signal.signal(signal.SIGTERM, lambda *_: _STOP.update(flag=True))
  key = kind
  tb = SummaryWriter(os.path.join(workdir, "tb")) if lead else None
  bar = tqdm(range(start, n_steps), initial=start, total=n_steps, desc=f"{cfg.name}", disable=not lead,
             dynamic_ncols=True)
  t_start, t_first, step = time.perf_counter(), None, start - 1  # a finished run only re-evaluates
  for step in bar:
    raw = next(data_it)
    batch = raw[key]
    if over > 1:  # keep the most speech-active windows (of the clean audio when augmented)
      active = raw["speech_activity"] if "speech_activity" in raw else training.speech_activity(batch, ccfg.sample_rate)
      batch = batch[np.sort(np.argsort(-active, kind="stable")[:local_bs])]
    params, opt_state, m = step_fn(params, opt_state, to_global({key: batch},
                                                                 {key: training.batch_sharding(mesh)}))
    if t_first is None:
      jax.block_until_ready(m)
      t_first = time.perf_counter()  # excludes compilation from the step rate
    if step % cfg.train.log_every == 0 or step == n_steps - 1:
      host = {k: float(v) for k, v in jax.device_get(m).items()}
      done = step - start
      sps = done / max(time.perf_counter() - t_first, 1e-9) if done else 0.0
      bar.set_postfix(loss=f"{host['loss']:.4f}", **({"psnr": f"{host['psnr']:.1f}"} if "psnr" in host else {}))
      logging.info("step %d  %s  (%.2f steps/s)", step, "  ".join(f"{k} {v:.4g}" for k, v in host.items()), sps)
      if tb:
        for k, v in host.items():
          tb.add_scalar(f"train/{k}", v, step)
        tb.add_scalar("train/steps_per_s", sps, step)
    if (step + 1) % every == 0 or step == n_steps - 1:
      save(step + 1)
    if lead and _EVAL_EVERY.value and (step + 1) % _EVAL_EVERY.value == 0 and step < n_steps - 1:
      res, _ = run_eval(params, max(8, _EVAL_WINDOWS.value // 4))
      logging.info("eval at step %d: %s", step + 1, json.dumps(res))
      for k, v in res.items():
        if isinstance(v, (int, float)):
          tb.add_scalar(f"eval_during/{k}", v, step + 1)
    if _STOP["flag"]:
      logging.warning("SIGTERM: saving step %d and exiting", step + 1)
      save(step + 1)
      break
  mgr.wait_until_finished()
  t_end = time.perf_counter()
  train_s = t_end - t_start
  steps_run = step + 1 - start
  done_steps = max(step + 1, start)
  if _STOP["flag"] or not lead:
    return

  t0 = time.perf_counter()
  result, samples = run_eval(params, _EVAL_WINDOWS.value)
  result.update({"config": cfg.name, "kind": kind, "steps": done_steps, "steps_this_run": steps_run,
                 "train_seconds_this_run": round(train_s, 1),
                 "seconds_per_step_after_compile": (round((t_end - t_first) / max(steps_run - 1, 1), 3)
                                                    if t_first else None),
                 "eval_seconds": round(time.perf_counter() - t0, 1), "data": _DATA.value,
                 "train_voices": _VOICES.value, "augment": _AUGMENT.value,
                 "batch_size": cfg.train.batch_size, "units_per_example": cfg.train.units_per_example,
                 "backend": jax.default_backend(), "devices": jax.device_count()})
  for k, v in result.items():
    if isinstance(v, (int, float)):
      tb.add_scalar(f"eval/{k}", v, done_steps)
  for i in range(len(samples["reference"])):
    ref, rec = samples["reference"][i], samples["reconstruction"][i]
    if kind == "audio":
      for name, wave in (("reference", ref), ("reconstruction", rec)):
        _add_wav(tb, f"eval/{i}/{name}", wave, ccfg.sample_rate, done_steps)
    else:
      n = min(8, ref.shape[0])
      strip = np.concatenate([np.concatenate(list(ref[:n]), 1), np.concatenate(list(rec[:n]), 1)], 0)
      tb.add_image(f"eval/{i}/top_reference_bottom_reconstruction", strip, done_steps, dataformats="HWC")
  tb.close()
  result["eval_split"] = _EVAL_SPLIT.value
  with open(os.path.join(workdir, "eval.json" if _EVAL_SPLIT.value == "validation" else f"eval_{_EVAL_SPLIT.value}.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result), flush=True)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
