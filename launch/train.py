"""Train the Transformer: `python -m launch.train --config=configs/small.py [--config.x=y]`.

Multi-host: start one process per host with `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I` (TPU pods auto-detect with --num_processes>1).
Each process feeds its own rows of every global batch.
"""

from __future__ import annotations

import json
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Config file.")
_DATA = flags.DEFINE_enum("data", "random", ["random"], "Token source: random tokens in the unit layout.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", 1, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", 0, "This process's index (multi-host).")
_METRICS_OUT = flags.DEFINE_string("metrics_out", None, "Write per-step metrics as JSON here.")


def main(argv):
  del argv
  from wan_streamer_jax.parallel import multihost
  multihost.initialize(_COORD.value, _NPROC.value, _PID.value)

  import jax
  from wan_streamer_jax.config import Config
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train.feed import check_batch, process_slice, to_global
  from wan_streamer_jax.train.random_data import random_token_batch
  from wan_streamer_jax.train.state import create_train_state
  from wan_streamer_jax.train.step import batch_shardings, make_train_step

  cfg = Config.from_dict(_CONFIG.value)
  mesh = make_mesh(cfg.mesh)
  logging.info("config %s on mesh %s (%d processes)", cfg.name, dict(mesh.shape), jax.process_count())
  ts = create_train_state(cfg, mesh)
  step_fn = make_train_step(cfg, ts, mesh)
  shardings = batch_shardings(mesh)
  rows = process_slice(cfg.train.batch_size)
  state, history = ts.state, []
  t0 = time.perf_counter()
  for step in range(cfg.train.num_steps):
    local = {k: v[rows] for k, v in random_token_batch(cfg, step).items()}
    if step == 0:
      check_batch(cfg, local, rows.stop - rows.start)
    state, metrics = step_fn(state, to_global(local, shardings))
    if step % cfg.train.log_every == 0 or step == cfg.train.num_steps - 1:
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      history.append({"step": step, **m})
      print(f"step {step:5d}  loss {m['loss']:.4f}  grad_norm {m['grad_norm']:.3f}  "
            f"text_out {m['loss/text_out']:.3f}  audio_out {m['loss/audio_out']:.3f}  "
            f"video_out {m['loss/video_out']:.3f}  ({time.perf_counter() - t0:.1f}s)", flush=True)
  if _METRICS_OUT.value:
    with open(_METRICS_OUT.value, "w") as f:
      json.dump(history, f)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
