"""Orbax checkpoints of every training run (the Transformer and both codecs), in one format.

A run's `checkpoints/` directory holds one step directory per save, with named items:

    params   the model parameters (sharded pytree; restored onto any mesh)
    opt      the optimizer state
    data     the Grain iterator position, one file per process (absent for step-indexed data)
    config   JSON: {"format", "kind" (transformer | audio | video), "config" (Config.to_dict()),
             "data" (what the run trained on), "process_count", "fingerprint"}

`fingerprint` is an order-independent hash of every bit of `params` and `opt`
computed at save time (identical on any mesh); a restore recomputes it, so a
truncated *or* silently corrupted step is detected. `Checkpointer.restore`
tries the newest step first and falls back to the previous one with a warning
naming the bad step; the bad step is then moved aside to `checkpoints.bad/`
(never deleted) so that the run can save that step number again.

Saves are asynchronous; `max_to_keep` steps are kept; Orbax commits a step
directory atomically, so a save interrupted by kill -9 leaves the last complete
step untouched.

For inference, `load_params(workdir)` / `load_model(workdir)` restore only the
parameters (Transformer or codec, the kind read from the checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from wan_streamer_jax.config_base import ConfigError

FORMAT = 2
KINDS = ("transformer", "audio", "video")


def _leaf_hash(x: jax.Array) -> jax.Array:
  """uint32 hash of every bit of `x`: sum of bits * (odd weight per position), mod 2**32."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  bits = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[
      x.dtype.itemsize]) if x.dtype.itemsize != 8 else jax.lax.bitcast_convert_type(x, jnp.uint32)
  bits = bits.astype(jnp.uint32).reshape(-1)
  pos = jnp.arange(bits.shape[0], dtype=jnp.uint32)
  return jnp.sum(bits * (pos * jnp.uint32(2654435761) + jnp.uint32(1)), dtype=jnp.uint32)


_hash_leaves = jax.jit(lambda leaves: [_leaf_hash(x) for x in leaves])


def fingerprint(tree) -> str:
  """Hex digest of every bit of every leaf of `tree` (the same for any sharding of the same values)."""
  leaves = jax.tree.leaves(tree)
  hashes = np.asarray(jax.device_get(_hash_leaves(leaves)), np.uint32) if leaves else np.zeros(0, np.uint32)
  shapes = json.dumps([(tuple(x.shape), str(x.dtype)) for x in leaves])
  return hashlib.sha256(hashes.tobytes() + shapes.encode()).hexdigest()[:32]


@dataclasses.dataclass
class Restored:
  step: int
  params: Any
  opt: Any
  meta: dict  # the `config` item (see the module docstring)


def run_meta(kind: str, cfg, data: dict | None = None) -> dict:
  """The `config` item of a checkpoint (without the fingerprint, added at save)."""
  if kind not in KINDS:
    raise ValueError(f"checkpoint kind: expected one of {KINDS}, got {kind!r}")
  return {"format": FORMAT, "kind": kind, "config": cfg.to_dict(), "data": data or {},
          "process_count": jax.process_count()}


class Checkpointer:
  """One run's `checkpoints/` directory (async Orbax saves, keep-N, restore with fallback)."""

  def __init__(self, directory: str, *, max_to_keep: int | None = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = epath.Path(os.path.expanduser(str(directory)))
    if not str(self.directory).startswith("gs://"):
      self.directory = epath.Path(os.path.abspath(str(self.directory)))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                             create=not read_only, read_only=read_only))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, params, opt, meta: dict, data_iter=None) -> None:
    """Starts an async save of step `step` (`meta` from `run_meta`); returns at once."""
    meta = dict(meta, step=int(step), fingerprint=fingerprint((params, opt)), saved_at=time.time())
    args = {"params": ocp.args.StandardSave(params), "opt": ocp.args.StandardSave(opt),
            "config": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(int(step), args=ocp.args.Composite(**args), force=True)

  def read_meta(self, step: int | None = None) -> dict:
    """The `config` item of `step` (default: the newest step)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"no checkpoints under {self.directory}")
    meta = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    if "format" not in meta:
      if "kind" not in meta:  # Transformer runs before the shared format saved one `state` item
        raise ConfigError(f"step {step} in {self.directory} was written by an older version of the trainer "
                          "(one `state` item); it cannot be resumed or loaded: start a new --workdir")
      meta = {"format": 1, "data": {}, "process_count": None, **meta}  # codec runs: {"kind", "config"}
    return meta

  def _has_item(self, step: int, name: str) -> bool:
    return (self.directory / str(step) / name).exists()

  def restore(self, abstract_params, abstract_opt=None, data_iter=None, *, step: int | None = None,
              check_meta=None) -> Restored | None:
    """Restores the newest readable step onto the shardings of the abstract targets.

    `abstract_*`: pytrees of `jax.ShapeDtypeStruct` with `sharding` (the
    targets; any mesh). `data_iter`, if given and saved by as many processes,
    is moved to the saved position in place. `check_meta(meta)` may raise
    (e.g. a config mismatch) before any array is read. Returns None when there
    is no checkpoint; raises a ValueError when no step is readable.
    """
    steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    bad = []
    for s in steps:
      try:
        meta = self.read_meta(s)
      except ConfigError:
        raise
      except Exception as e:  # noqa: BLE001 -- any failure to read a step means it is unusable
        bad.append((s, f"unreadable config item: {type(e).__name__}: {str(e)[:300]}"))
        logging.warning("checkpoint step %d in %s is unreadable (%s); trying the previous step", s,
                        self.directory, bad[-1][1])
        continue
      if check_meta is not None:
        check_meta(meta)  # a refusal is the user's decision to make, not a corruption
      args = {"params": ocp.args.StandardRestore(abstract_params)}
      if abstract_opt is not None:
        args["opt"] = ocp.args.StandardRestore(abstract_opt)
      same_procs = meta.get("process_count") in (None, jax.process_count())
      if data_iter is not None and self._has_item(s, "data"):
        if same_procs:
          args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        else:
          logging.warning("step %d was saved by %s processes, this run has %d: the data iterator starts "
                          "afresh (its position is per process)", s, meta.get("process_count"),
                          jax.process_count())
      try:
        out = self.manager.restore(s, args=ocp.args.Composite(**args))
        params, opt = out["params"], out.get("opt") if abstract_opt is not None else None
        if abstract_opt is not None and meta.get("fingerprint"):
          got = fingerprint((params, opt))
          if got != meta["fingerprint"]:
            raise ValueError(f"contents fingerprint {got} differs from the one saved ({meta['fingerprint']})")
      except Exception as e:  # noqa: BLE001
        bad.append((s, f"{type(e).__name__}: {str(e)[:300]}"))
        logging.warning("checkpoint step %d in %s is truncated or corrupted (%s); falling back to the "
                        "previous step", s, self.directory, bad[-1][1])
        continue
      if bad:
        self._move_aside([b for b, _ in bad])
      return Restored(s, params, opt, meta)
    raise ValueError(f"no readable checkpoint in {self.directory}: " +
                     "; ".join(f"step {s}: {why}" for s, why in bad))

  def _move_aside(self, steps: list[int]) -> None:
    """Bad steps go to `<dir>.bad/<step>-<time>` (kept for inspection) so the run can save them again."""
    from jax.experimental import multihost_utils
    self.manager.wait_until_finished()
    aside = epath.Path(str(self.directory) + ".bad")
    multihost_utils.sync_global_devices("checkpoint_move_aside_start")
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      for s in steps:
        target = aside / f"{s}-{int(time.time())}"
        (self.directory / str(s)).rename(target)
        logging.warning("moved the bad checkpoint step %d to %s (nothing deleted)", s, target)
    multihost_utils.sync_global_devices("checkpoint_move_aside_done")
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _abstract(tree, sharding) -> Any:
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def load_model(workdir: str, kind: str | None = None, *, step: int | None = None, mesh=None):
  """Model with trained parameters from a training run's `workdir` -> (model, cfg, kind, step).

  `kind` (transformer | audio | video), when given, must match the run's. The
  Transformer is restored onto `mesh` (default: a mesh of all devices); a codec
  onto the first device. Only the parameters are read (not the optimizer).
  """
  from flax import nnx

  from wan_streamer_jax.config import Config
  root = epath.Path(os.path.expanduser(str(workdir)))
  ckpt = Checkpointer(root / "checkpoints", max_to_keep=None, async_save=False, read_only=True)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise ValueError(f"expected checkpoints under {root / 'checkpoints'}, found none")
  meta = ckpt.read_meta(step)
  cfg = Config.from_dict(meta["config"])
  if kind is not None and meta["kind"] != kind:
    raise ValueError(f"{workdir}: expected a {kind} run, found a {meta['kind']} run")
  if meta["kind"] == "transformer":
    from wan_streamer_jax.parallel.mesh import make_mesh
    from wan_streamer_jax.train.state import abstract_train_state
    mesh = mesh or make_mesh(cfg.mesh.__class__(data=-1, fsdp=1, tensor=1))
    ts = abstract_train_state(cfg, mesh)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: _transformer(cfg)))
    params = ckpt.restore(ts.state[0], step=step).params
    model = nnx.merge(graphdef, params)
  else:
    from wan_streamer_jax.codecs.training import create_codec
    model = create_codec(cfg, meta["kind"])
    _, init = nnx.split(model)
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    nnx.update(model, ckpt.restore(_abstract(init, dev), step=step).params)
  ckpt.close()
  return model, cfg, meta["kind"], step


def _transformer(cfg):
  from flax import nnx

  from wan_streamer_jax.model.transformer import WanStreamer
  with nnx.use_eager_sharding(False):
    return WanStreamer(cfg, rngs=nnx.Rngs(0))


def load_params(workdir: str, kind: str | None = None, *, step: int | None = None, mesh=None):
  """Trained parameters (an `nnx.State`) of a run -> (params, cfg, kind, step). See `load_model`."""
  from flax import nnx
  model, cfg, kind, step = load_model(workdir, kind, step=step, mesh=mesh)
  return nnx.state(model, nnx.Param), cfg, kind, step
