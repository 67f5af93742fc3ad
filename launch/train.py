"""Train the Transformer: `python -m launch.train --config=configs/small.py [--config.x=y]`.

Data: `--data=random` (deterministic random tokens per step) or `--data=grain`
(the Grain token pipeline: shuffling, windows, packing with segment ids; over
`--token_dir` written by `launch.tokenize`, or random token conversations when
no directory is given). With `--workdir`, Orbax checkpoints (model, optimizer,
data-iterator position, config) are saved every `train.checkpoint_every` steps,
at the end and on SIGTERM; a restarted run resumes from the latest one.

Multi-host: start one process per host with `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I` (TPU pods auto-detect with --num_processes>1).
Each process feeds its own rows of every global batch.
"""

from __future__ import annotations

import json
import os
import signal
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Config file.")
_DATA = flags.DEFINE_enum("data", "random", ["random", "grain"], "Token source (see module docstring).")
_TOKEN_DIR = flags.DEFINE_string("token_dir", None, "Token dataset written by launch.tokenize (--data=grain).")
_TOKEN_SPLIT = flags.DEFINE_string("token_split", "train", "Split of --token_dir to train on.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints go to WORKDIR/checkpoints; resumes from there.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", 1, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", 0, "This process's index (multi-host).")
_METRICS_OUT = flags.DEFINE_string("metrics_out", None, "Write the logged metrics as JSON here.")

_STOP = {"flag": False}


def _grain_iterator(cfg, rows: int):
  import jax
  from data_pipelines import pipelines, token_data
  if _TOKEN_DIR.value:
    from wan_streamer_jax.codecs.token_io import TokenDataSource
    source = TokenDataSource(_TOKEN_DIR.value, _TOKEN_SPLIT.value)
  else:
    source = token_data.RandomTokenSource(cfg, num_examples=512, seed=cfg.train.seed)
  ds = pipelines.token_pipeline(source, cfg, batch_size=rows, seed=cfg.train.seed,
                                process_index=jax.process_index(), process_count=jax.process_count())
  return iter(ds)


def main(argv):
  del argv
  from wan_streamer_jax.parallel import multihost
  multihost.initialize(_COORD.value, _NPROC.value, _PID.value)

  import jax
  from wan_streamer_jax.config import Config
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train.checkpoint import Checkpointer
  from wan_streamer_jax.train.feed import check_batch, process_slice, to_global
  from wan_streamer_jax.train.random_data import random_token_batch
  from wan_streamer_jax.train.state import abstract_train_state, create_train_state, replicated_fraction
  from wan_streamer_jax.train.step import batch_shardings, make_train_step

  cfg = Config.from_dict(_CONFIG.value)
  mesh = make_mesh(cfg.mesh, batch_size=cfg.train.batch_size)
  logging.info("config %s on mesh %s (%d processes)", cfg.name, dict(mesh.shape), jax.process_count())
  rows = process_slice(cfg.train.batch_size)
  n_rows = rows.stop - rows.start
  data_iter = _grain_iterator(cfg, n_rows) if _DATA.value == "grain" else None

  ckpt = Checkpointer(os.path.join(_WORKDIR.value, "checkpoints"), max_to_keep=cfg.train.checkpoints_to_keep) \
      if _WORKDIR.value else None
  start = ckpt.latest_step() if ckpt else None
  if start is not None:
    ts = abstract_train_state(cfg, mesh)
    state = ckpt.restore(start, ts.state, data_iter)
    print(f"resumed from step {start}", flush=True)
  else:
    ts, start = create_train_state(cfg, mesh), 0
    state = ts.state
  repl = replicated_fraction(ts)
  if mesh.shape["fsdp"] * mesh.shape["tensor"] > 1 and repl > 0.02:
    raise ValueError(f"{repl:.1%} of the parameters are replicated on mesh {dict(mesh.shape)} (limit 2%): "
                     "check the logical-axis rules in wan_streamer_jax/parallel/rules.py")
  logging.info("replicated parameters: %.2f%%", 100 * repl)
  step_fn = make_train_step(cfg, ts, mesh)
  shardings = batch_shardings(mesh)
  signal.signal(signal.SIGTERM, lambda *_: _STOP.update(flag=True))

  history, t0, step = [], time.perf_counter(), start
  while step < cfg.train.num_steps:
    if data_iter is not None:
      local = next(data_iter)
    else:
      local = {k: v[rows] for k, v in random_token_batch(cfg, step).items()}
    if step == start:
      check_batch(cfg, local, n_rows)
    state, metrics = step_fn(state, to_global(local, shardings))
    step += 1
    last = step == cfg.train.num_steps
    if (step - 1) % cfg.train.log_every == 0 or last:
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      history.append({"step": step - 1, **m})
      print(f"step {step - 1:5d}  loss {m['loss']:.4f}  grad_norm {m['grad_norm']:.3f}  "
            f"text_out {m['loss/text_out']:.3f}  audio_out {m['loss/audio_out']:.3f}  "
            f"video_out {m['loss/video_out']:.3f}  ({time.perf_counter() - t0:.1f}s)", flush=True)
    if ckpt and (last or _STOP["flag"] or (cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0)):
      ckpt.save(step, state, cfg, data_iter, force=True)
    if _STOP["flag"]:
      print(f"SIGTERM: saved step {step}, exiting", flush=True)
      break
  if ckpt:
    ckpt.close()
  if _METRICS_OUT.value:
    with open(_METRICS_OUT.value, "w") as f:
      json.dump(history, f)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
