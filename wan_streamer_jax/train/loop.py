"""The one training loop (the Transformer and both codecs): resume, step, log, evaluate, checkpoint, stop.

    task = transformer_task(cfg, mesh, data=...)     # or codecs.training.codec_task(...)
    summary = train(task, workdir="runs/x")

What a `Task` provides is the model-specific part (state, step, batches,
evaluation); everything else lives here, once:

- resume from the newest readable checkpoint in `workdir/checkpoints` (a
  corrupted newest step falls back to the previous one), refusing a workdir
  trained with another config or data source unless `allow_mismatch`;
  `init_from` (another run's workdir) loads parameters only;
- checkpoints every `train.checkpoint_every` steps, at the end, and on SIGTERM
  or SIGINT (Ctrl-C saves; a second Ctrl-C aborts at once);
- a tqdm bar (loss, units/s, ETA) on stderr, log lines on stdout through
  `tqdm.write` (never interleaved), TensorBoard scalars (tensorboardX) in
  `workdir/tb`, and every logged step appended to `workdir/metrics.jsonl`;
- evaluation every `train.eval_every` steps and at the end (`task.evaluate`).

Steps are counted as optimizer updates done: checkpoint `N` holds the state
after `N` steps; a logged `step` is the 0-based index of the step that ran.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from wan_streamer_jax.config import Config, ConfigError
from wan_streamer_jax.train import checkpoint as ckpt_lib
from wan_streamer_jax.train.throughput import matmul_peak_flops

# Config fields a resumed run may change freely (schedule, parallelism, implementation choices).
RESUMABLE_CHANGES = ("name", "train.num_steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
                     "train.checkpoints_to_keep", "mesh.", "model.attention_impl", "model.remat_policy",
                     "codec_train.eval_", "codec_train.data_threads", "codec_train.cache_streams")


@dataclasses.dataclass
class Task:
  """The model-specific half of a training run.

  `state` is any pytree the step consumes; `split(state) -> (params, opt)` and
  `join(params, opt) -> state` map it to the checkpoint's items. `next_batch(step)`
  returns this process's rows of global batch `step` (host numpy); `data_iter`,
  when not None, is the Grain iterator behind it (its position is checkpointed).
  `transform(batch, step)` is applied to every host batch before the step
  (e.g. an augmentation or a selection of windows); `check(batch)` validates the
  first batch before anything compiles.
  """

  kind: str  # transformer | audio | video
  cfg: Config
  mesh: Any
  init: Callable[[], Any]
  abstract: Callable[[], tuple[Any, Any]]  # (params, opt) ShapeDtypeStructs with shardings
  step: Callable[[Any, dict], tuple[Any, dict]]
  next_batch: Callable[[int], dict]
  to_global: Callable[[dict], dict]
  split: Callable[[Any], tuple[Any, Any]]
  join: Callable[[Any, Any], Any]
  data_info: dict = dataclasses.field(default_factory=dict)
  data_iter: Any = None
  transform: Callable[[dict, int], dict] | None = None
  check: Callable[[dict], None] | None = None
  evaluate: Callable[[Any, int, bool], dict] | None = None  # (state, step, final) -> scalar metrics
  finish: Callable[[Any, int, Any], dict] | None = None  # (state, step, tb writer) -> final results
  units_per_step: float = 0.0  # global units (160 ms) consumed per step
  flops_per_step: float | None = None  # model FLOPs per step (for MFU)
  learning_rate: Callable[[int], float] | None = None  # step -> learning rate (logged)
  postfix: tuple[str, ...] = ("loss",)


@dataclasses.dataclass
class Summary:
  start_step: int
  end_step: int
  stopped: bool  # by SIGTERM / SIGINT
  history: list[dict]
  final: dict


class _Stop:
  """SIGTERM / SIGINT set a flag the loop checks after every step (a second SIGINT aborts)."""

  def __init__(self):
    self.flag, self.signal, self._old = False, None, {}

  def _handler(self, signum, frame):
    if self.flag and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.flag, self.signal = True, signal.Signals(signum).name

  def __enter__(self):
    for s in (signal.SIGTERM, signal.SIGINT):
      self._old[s] = signal.signal(s, self._handler)
    return self

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)

  def any_process(self) -> bool:
    if jax.process_count() == 1:
      return self.flag
    from jax.experimental import multihost_utils
    return bool(np.asarray(multihost_utils.process_allgather(np.int32(self.flag))).any())


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_differences(saved: dict, current: dict, ignore=RESUMABLE_CHANGES) -> list[str]:
  """`["model.num_layers: 2 -> 4", ...]` for the fields that differ (tuples and lists compare equal)."""
  a, b = _flat(json.loads(json.dumps(saved))), _flat(json.loads(json.dumps(current)))
  diffs = []
  for key in sorted(set(a) | set(b)):
    if any(key == i or (i.endswith((".", "_")) and key.startswith(i)) for i in ignore):
      continue
    if a.get(key, "<absent>") != b.get(key, "<absent>"):
      diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
  return diffs


def check_resume(meta: dict, task: Task, directory, allow_mismatch: bool) -> None:
  """Refuses (ConfigError) to resume a checkpoint of another kind, config or data source."""
  if meta["kind"] != task.kind:
    raise ConfigError(f"{directory} holds a {meta['kind']} run; this run trains a {task.kind} model: "
                      "use another --workdir")
  diffs = config_differences(meta["config"], task.cfg.to_dict())
  data = config_differences(meta.get("data") or {}, task.data_info, ignore=())
  if meta.get("data") in (None, {}):
    data = []  # checkpoints written before the data source was recorded
  if not (diffs or data):
    return
  what = "; ".join([*(f"config {d}" for d in diffs), *(f"data {d}" for d in data)])
  if not allow_mismatch:
    raise ConfigError(f"{directory} was trained with another setup ({what}); resuming would silently "
                      "change the run. Use another --workdir, or pass --allow_mismatch to continue "
                      "deliberately")
  logging.warning("resuming %s despite: %s (--allow_mismatch)", directory, what)


def _abstract_like(tree, shardings_tree):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s.sharding), tree,
                      shardings_tree)


def _init_from(task: Task, state, workdir: str):
  """Replaces the parameters of `state` by those of another run (weights only; optimizer fresh)."""
  params, opt = task.split(state)
  other = ckpt_lib.Checkpointer(os.path.join(os.path.expanduser(workdir), "checkpoints"), max_to_keep=None,
                                async_save=False, read_only=True)
  meta = other.read_meta()
  if meta["kind"] != task.kind:
    raise ConfigError(f"--init_from={workdir}: expected a {task.kind} run, found a {meta['kind']} run")
  abstract_params, _ = task.abstract()
  restored = other.restore(abstract_params)
  other.close()
  logging.info("initialised the parameters from %s (step %d)", workdir, restored.step)
  return task.join(restored.params, opt)


class _Writers:
  """Process 0 writes TensorBoard scalars and `metrics.jsonl`; other processes write nothing."""

  def __init__(self, workdir: str | None):
    self.tb, self.jsonl = None, None
    if workdir and jax.process_index() == 0:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(os.path.join(workdir, "tb"))
      self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def write(self, record: dict, prefix: str = "train") -> None:
    if self.tb is not None:
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)) and np.isfinite(v):
          self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])
    if self.jsonl is not None:
      self.jsonl.write(json.dumps({"split": prefix, **record}) + "\n")
      self.jsonl.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()
    if self.jsonl is not None:
      self.jsonl.close()


def _say(msg: str) -> None:
  from tqdm import tqdm
  if jax.process_index() == 0:
    tqdm.write(msg, file=sys.stdout)
    sys.stdout.flush()


def train(task: Task, *, workdir: str | None = None, init_from: str | None = None,
          allow_mismatch: bool = False, progress: bool = True, peak_flops: float | None = None) -> Summary:
  """Runs `task` to `cfg.train.num_steps` steps (resuming from `workdir`); see the module docstring."""
  from tqdm import tqdm
  cfg, tc = task.cfg, task.cfg.train
  if workdir:
    workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(workdir, exist_ok=True)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=tc.checkpoints_to_keep) \
      if workdir else None
  meta = ckpt_lib.run_meta(task.kind, cfg, task.data_info)

  restored = None
  if ckpt is not None:
    abstract_params, abstract_opt = task.abstract()
    restored = ckpt.restore(abstract_params, abstract_opt, task.data_iter,
                            check_meta=lambda m: check_resume(m, task, ckpt.directory, allow_mismatch))
  if restored is not None:
    state, start = task.join(restored.params, restored.opt), restored.step
    _say(f"resumed from step {start} ({ckpt.directory})")
  else:
    state, start = task.init(), 0
    if init_from:
      state = _init_from(task, state, init_from)

  if peak_flops is None and task.flops_per_step:
    peak_flops = matmul_peak_flops() * jax.device_count()
  writers = _Writers(workdir)
  history, final, stopped = [], {}, False
  bar = tqdm(total=tc.num_steps, initial=start, desc=cfg.name, disable=not progress or jax.process_index() != 0,
             dynamic_ncols=True, file=sys.stderr)
  t_first, n_timed, step = None, 0, start
  with _Stop() as stop:
    while step < tc.num_steps:
      local = task.next_batch(step)
      if task.transform is not None:
        local = task.transform(local, step)
      if step == start and task.check is not None:
        task.check(local)
      state, metrics = task.step(state, task.to_global(local))
      step += 1
      if t_first is None:
        jax.block_until_ready(metrics)
        t_first = time.perf_counter()  # the step rate excludes compilation
      else:
        n_timed += 1
      bar.update(1)
      last = step == tc.num_steps
      if (step - 1) % tc.log_every == 0 or last:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        dt = time.perf_counter() - t_first
        rec = {"step": step - 1, **m}
        if n_timed and dt > 0:
          rec["steps_per_s"] = n_timed / dt
          rec["units_per_s"] = task.units_per_step * n_timed / dt
          if task.flops_per_step and peak_flops:
            rec["mfu"] = task.flops_per_step * n_timed / dt / peak_flops
        if task.learning_rate is not None:
          rec["learning_rate"] = float(task.learning_rate(step - 1))
        history.append(rec)
        writers.write(rec)
        bar.set_postfix({k: f"{m[k]:.4g}" for k in task.postfix if k in m}
                        | ({"units/s": f"{rec['units_per_s']:.1f}"} if "units_per_s" in rec else {}))
        _say(f"step {step - 1:6d}  " + "  ".join(f"{k} {rec[k]:.4g}" for k in task.postfix if k in rec)
             + (f"  grad_norm {rec['grad_norm']:.3g}" if "grad_norm" in rec else "")
             + (f"  units/s {rec['units_per_s']:.1f}" if "units_per_s" in rec else ""))
        if not np.isfinite(m.get("loss", 0.0)):
          logging.warning("non-finite loss at step %d", step - 1)
        stopped = stop.any_process()
      elif stop.flag and jax.process_count() == 1:
        stopped = True
      if ckpt is not None and (last or stopped or (tc.checkpoint_every and step % tc.checkpoint_every == 0)):
        params, opt = task.split(state)
        ckpt.save(step, params, opt, meta, task.data_iter)
      if task.evaluate is not None and tc.eval_every and step % tc.eval_every == 0 and not last and not stopped:
        res = task.evaluate(state, step, False)
        writers.write({"step": step, **res}, prefix="eval")
        _say(f"eval at step {step}: " + json.dumps(res))
      if stopped:
        _say(f"{stop.signal or 'stop'}: saved step {step}, exiting" if ckpt else
             f"{stop.signal or 'stop'}: stopping at step {step} (no --workdir: nothing saved)")
        break
  bar.close()
  if ckpt is not None:
    ckpt.close()
  if not stopped and task.finish is not None:
    final = task.finish(state, step, writers.tb) or {}
    if final:
      writers.write({"step": step, **{k: v for k, v in final.items() if isinstance(v, (int, float))}},
                    prefix="final")
  writers.close()
  return Summary(start, step, stopped, history, final)
