"""The Transformer's half of a training run (`loop.Task`): sharded state, step, batches, evaluation.

    mesh = make_mesh(cfg.mesh, batch_size=cfg.train.batch_size)
    task = transformer_task(cfg, mesh)                                  # random tokens per step
    task = transformer_task(cfg, mesh, source=TokenDataSource(dir, "train"),
                            eval_source=TokenDataSource(dir, "validation"), data_info={...})
    loop.train(task, workdir=...)

Batches: int32 `[batch, units_per_example * tokens_per_unit]` `tokens`,
`segment_ids`, `unit_ids`; each process feeds its own rows. With `source`
(a random-access source of token examples, `data_pipelines.token_data`) the
Grain token pipeline shuffles, windows and packs them, and its iterator
position is checkpointed; without one, global batch `step` is random tokens
seeded by `(train.seed, step)` (the position is the step).
"""

from __future__ import annotations

import jax
import numpy as np

from wan_streamer_jax import schedule
from wan_streamer_jax.config import Config, ConfigError
from wan_streamer_jax.model import flops
from wan_streamer_jax.run_config import MARK_METRICS
from wan_streamer_jax.train.feed import batch_keys, check_batch, process_slice, to_global
from wan_streamer_jax.train.loop import Task
from wan_streamer_jax.train.optimizer import learning_rate_schedule
from wan_streamer_jax.train.random_data import random_token_batch
from wan_streamer_jax.train.state import abstract_train_state, create_train_state, replicated_fraction
from wan_streamer_jax.train.step import batch_shardings, make_eval_step, make_train_step

REPLICATED_LIMIT = 0.02  # MaxText fails a sharded run with more than 2% replicated parameters


def split_state(state):
  """nnx State of (model, optimizer) -> (params, opt) checkpoint items."""
  return state[0], state[1]


def join_state(template, params, opt):
  """Inverse of `split_state` (`template`: any state with the same structure)."""
  return jax.tree.unflatten(jax.tree.structure(template), jax.tree.leaves(params) + jax.tree.leaves(opt))


def mean_metrics(batches: list[dict]) -> dict:
  """The mean of per-batch metrics over an evaluation: each batch counts once, except the marked targets'
  `loss/<mark>` / `acc/<mark>` (answer, reply, pause, stop), which weigh a batch by its `tokens/<mark>` (many
  batches hold none and report 0)."""
  out = {}
  for k in (batches[0] if batches else {}):
    v = np.array([float(m[k]) for m in batches])
    mark = k.split("/")[-1]
    if k.split("/")[0] in ("loss", "acc") and mark in MARK_METRICS:
      w = np.array([float(m[f"tokens/{mark}"]) for m in batches])
      out[k] = float((v * w).sum() / max(w.sum(), 1.0))
    else:
      out[k] = float(v.mean())
  return out


def transformer_task(cfg: Config, mesh, *, source=None, eval_source=None, eval_batches: int = 8,
                     data_info: dict | None = None) -> Task:
  """A `loop.Task` training the Transformer of `cfg` on `mesh` (see the module docstring)."""
  rows = process_slice(cfg.train.batch_size)
  n_rows = rows.stop - rows.start
  ts = abstract_train_state(cfg, mesh)
  repl = replicated_fraction(ts)
  if mesh.shape["fsdp"] * mesh.shape["tensor"] > 1 and repl > REPLICATED_LIMIT:
    raise ConfigError(f"{repl:.1%} of the parameters are replicated on mesh {dict(mesh.shape)} (limit 2%): "
                      "check the logical-axis rules in wan_streamer_jax/parallel/rules.py")
  step_fn = make_train_step(cfg, ts, mesh)
  shardings = batch_shardings(mesh, batch_keys(cfg))
  data_iter = None
  if source is not None:
    from data_pipelines import pipelines
    data_iter = iter(pipelines.token_pipeline(source, cfg, batch_size=n_rows, seed=cfg.train.seed,
                                              process_index=jax.process_index(),
                                              process_count=jax.process_count(),
                                              own_stream_swap=cfg.train.own_stream_swap))

  def next_batch(step: int) -> dict:
    if data_iter is not None:
      return next(data_iter)
    return {k: v[rows] for k, v in random_token_batch(cfg, step).items()}

  evaluate = None
  if eval_source is not None:
    eval_fn = make_eval_step(cfg, ts, mesh)

    def eval_batches_iter():
      from data_pipelines import pipelines
      return iter(pipelines.token_pipeline(eval_source, cfg, batch_size=n_rows, seed=0, shuffle=False,
                                           num_epochs=1, process_index=jax.process_index(),
                                           process_count=jax.process_count()))

    # Refused here, before any compile: an evaluation of zero batches would report nothing, silently.
    if next(eval_batches_iter(), None) is None:
      raise ConfigError(f"eval_source: {len(eval_source)} conversations give less than one evaluation batch of "
                        f"{n_rows} windows of {cfg.train.units_per_example} units on this process "
                        f"(train.batch_size={cfg.train.batch_size}, {jax.process_count()} processes); "
                        "use a larger evaluation split or a smaller batch")

    def evaluate(state, step: int, final: bool) -> dict:
      return mean_metrics([jax.device_get(eval_fn(state, to_global(local, shardings)))
                           for _, local in zip(range(eval_batches), eval_batches_iter())])

  L = schedule.unit_layout(cfg).tokens_per_unit
  tokens = cfg.train.batch_size * cfg.train.units_per_example * L
  lr = learning_rate_schedule(cfg.optimizer)
  return Task(
      kind="transformer", cfg=cfg, mesh=mesh,
      init=lambda: create_train_state(cfg, mesh).state,
      abstract=lambda: split_state(ts.state),
      step=step_fn,
      next_batch=next_batch,
      to_global=lambda b: to_global(b, shardings),
      split=split_state,
      join=lambda p, o: join_state(ts.state, p, o),
      data_info=dict(data_info or {"source": "random", "seed": cfg.train.seed}),
      data_iter=data_iter,
      check=lambda b: check_batch(cfg, b, n_rows),
      evaluate=evaluate,
      finish=(lambda state, step, tb: evaluate(state, step, True)) if evaluate else None,
      units_per_step=cfg.train.batch_size * cfg.train.units_per_example,
      flops_per_step=tokens * flops.train_flops_per_token(cfg),
      learning_rate=lambda s: float(np.asarray(lr(s))),
      postfix=("loss", "loss/text_out", "loss/audio_out", "loss/video_out"),
  )
