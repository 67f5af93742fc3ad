"""Orbax checkpoints of a training run: model + optimizer state, data-iterator state, config.

One step directory holds `state` (the sharded nnx state, restored onto any
mesh through abstract targets carrying the new shardings), `data` (the Grain
iterator position, per process) and `config` (JSON). Saves are asynchronous;
`max_to_keep` old steps are kept; a failed or interrupted save never replaces
the last complete step (Orbax commits a step directory atomically).
"""

from __future__ import annotations

import os

import grain
import orbax.checkpoint as ocp

from wan_streamer_jax.config import Config


class Checkpointer:
  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                             create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, cfg: Config, data_iter=None, *, force: bool = False) -> bool:
    """Starts an (async) save of `state` and the iterator position after `step` steps."""
    args = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(cfg.to_dict())}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def restore(self, step: int, abstract_state, data_iter=None):
    """Restores `state` onto the shardings of `abstract_state` (`abstract_train_state(...).state`).

    `data_iter`, if given, is moved to the saved position in place.
    """
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

