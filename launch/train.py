"""Train the Transformer: `python -m launch.train --config=small [--config.x=y] [--workdir=DIR]`.

Data: `--data=random` (deterministic random tokens per step) or `--data=grain`
(the Grain token pipeline: shuffling, windows, packing with segment ids; over
`--token_dir` written by `python -m launch.tokenize`, or random token
conversations when no directory is given).

With `--workdir`, Orbax checkpoints (parameters, optimizer, data-iterator
position, config) are saved every `train.checkpoint_every` steps, at the end
and on SIGTERM / Ctrl-C; the same command resumes from the newest readable
one (it refuses a workdir trained with another config or data unless
`--allow_mismatch`). The workdir also holds `metrics.jsonl` and TensorBoard
events (`tb/`). `--init_from=OTHER_WORKDIR` starts from another run's weights.

Multi-host: start one process per host with `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I` (TPU pods auto-detect with --num_processes>1).
Each process feeds its own rows of every global batch.
"""

from __future__ import annotations

import json
import os

from absl import flags

from launch import common

_CONFIG = common.config_flag("tiny")
_DATA = flags.DEFINE_enum("data", "random", ["random", "grain"], "Token source (see module docstring).")
_TOKEN_DIR = flags.DEFINE_string("token_dir", None, "Token dataset written by launch.tokenize (--data=grain).")
_TOKEN_SPLIT = flags.DEFINE_string("token_split", "train", "Split of --token_dir to train on.")
_EVAL_SPLIT = flags.DEFINE_string("eval_split", "validation", "Split of --token_dir evaluated every "
                                  "train.eval_every steps and at the end ('' = none).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints/, metrics.jsonl, tb/; resumes.")
_INIT_FROM = flags.DEFINE_string("init_from", None, "Initialise the parameters from this run's workdir.")
_ALLOW_MISMATCH = flags.DEFINE_bool("allow_mismatch", False, "Resume or read tokens even though the "
                                    "saved config / data source differs from this run's.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", 1, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", 0, "This process's index (multi-host).")
_METRICS_OUT = flags.DEFINE_string("metrics_out", None, "Also write the logged metrics as one JSON list here.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a tqdm progress bar on stderr.")


def main(argv):
  del argv
  from wan_streamer_jax.parallel import multihost
  multihost.initialize(_COORD.value, _NPROC.value, _PID.value)

  import jax
  from wan_streamer_jax.config import Config
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train import loop
  from wan_streamer_jax.train.transformer_task import transformer_task

  cfg = Config.from_dict(_CONFIG.value)
  mesh = make_mesh(cfg.mesh, batch_size=cfg.train.batch_size)
  print(f"config {cfg.name} on mesh {dict(mesh.shape)} ({jax.process_count()} processes)", flush=True)
  source = eval_source = None
  info = {"source": "random", "seed": cfg.train.seed}
  if _DATA.value == "grain":
    from data_pipelines import token_data
    if _TOKEN_DIR.value:
      token_dir = os.path.abspath(os.path.expanduser(_TOKEN_DIR.value))
      token_data.check_tokens_fit(token_dir, cfg, allow_mismatch=_ALLOW_MISMATCH.value)
      source = token_data.TokenDataSource(token_dir, _TOKEN_SPLIT.value)
      if _EVAL_SPLIT.value and token_data.has_split(token_dir, _EVAL_SPLIT.value):
        eval_source = token_data.TokenDataSource(token_dir, _EVAL_SPLIT.value)
      info = {"source": "tokens", "token_dir": token_dir, "split": _TOKEN_SPLIT.value}
    else:
      source = token_data.RandomTokenSource(cfg, num_examples=512, seed=cfg.train.seed)
      info = {"source": "random_conversations", "seed": cfg.train.seed}
  task = transformer_task(cfg, mesh, source=source, eval_source=eval_source, data_info=info)
  summary = loop.train(task, workdir=_WORKDIR.value, init_from=_INIT_FROM.value,
                       allow_mismatch=_ALLOW_MISMATCH.value, progress=_PROGRESS.value)
  if _METRICS_OUT.value and jax.process_index() == 0 or (_METRICS_OUT.value and _NPROC.value > 1):
    with open(_METRICS_OUT.value, "w") as f:
      json.dump(summary.history, f)
  if summary.final:
    print(json.dumps({"final_eval": summary.final}), flush=True)


def run():
  common.run(main)


if __name__ == "__main__":
  run()
