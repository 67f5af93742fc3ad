"""The inference parts of a training run: config, Transformer parameters and codecs.

Used by `launch/stream.py`, `launch/export.py` and the stream benchmark (not by
the serving side, which loads an artifact). The Transformer checkpoint is read
through the shared helper `wan_streamer_jax.train.checkpoint` (parameters only;
the optimizer state is never restored). Codecs come from
`launch/train_codec.py` run directories, or random init (tests, speed runs).
"""

from __future__ import annotations

import dataclasses
import os

import jax
from flax import nnx

from wan_streamer_jax.config import Config, MeshConfig


# Model fields a checkpoint may be streamed with other values of (no parameter changes shape).
STREAM_TUNABLE = ("attention_impl", "window_units", "sink_units", "compute_dtype", "remat_policy")


def checkpoint_dir(path: str) -> str:
  """A run directory (`--workdir` of launch.train) or its `checkpoints/` folder -> the run directory."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.basename(path) == "checkpoints" and os.path.isdir(path):
    return os.path.dirname(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return path
  raise ValueError(f"checkpoint: expected a launch.train --workdir (holding checkpoints/), "
                   f"{path} has none")


def load_run_config(path: str, step: int | None = None) -> Config:
  """The config saved with the checkpoint (validated), through the shared checkpoint helper."""
  from wan_streamer_jax.train.checkpoint import Checkpointer
  run = checkpoint_dir(path)
  ckpt = Checkpointer(os.path.join(run, "checkpoints"), max_to_keep=None, async_save=False, read_only=True)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise ValueError(f"checkpoint {path}: expected saved steps, found none")
    if step is not None and step not in steps:
      raise ValueError(f"checkpoint {path}: step expected one of {steps}, received {step}")
    meta = ckpt.read_meta(step)
  finally:
    ckpt.close()
  if meta["kind"] != "transformer":
    raise ValueError(f"checkpoint {path}: expected a Transformer run (launch.train), received a "
                     f"{meta['kind']} codec run")
  return Config.from_dict(meta["config"])


def load_model(path: str, step: int | None = None, cfg: Config | None = None):
  """-> `(cfg, model, step)`: the WanStreamer with the checkpoint's parameters, on one device.

  Reads the parameters only (`train.checkpoint.load_model`; the optimizer is never restored).
  `cfg` (default: the saved one) must describe the same architecture; only the fields in
  `STREAM_TUNABLE` may differ. A different window than in training changes what the model
  attends to (training and streaming should use the same one).
  """
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train import checkpoint as train_ckpt
  saved = load_run_config(path, step)
  cfg = (cfg or saved).replace(mesh=dataclasses.asdict(MeshConfig(data=1, fsdp=1, tensor=1)))
  tunable = {f: getattr(cfg.model, f) for f in STREAM_TUNABLE}
  if dataclasses.replace(saved.model, **tunable) != cfg.model:
    raise ValueError(f"config: the model section differs from the checkpoint's ({path}) beyond "
                     f"{STREAM_TUNABLE}; expected {saved.model}, received {cfg.model}")
  mesh = make_mesh(cfg.mesh, devices=jax.devices()[:1])
  trained, _, _, step = train_ckpt.load_model(checkpoint_dir(path), "transformer", step=step, mesh=mesh)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: _model(cfg)))  # the requested tunables (e.g. window)
  return cfg, nnx.merge(graphdef, nnx.state(trained)), step


def _model(cfg: Config):
  from wan_streamer_jax.model.transformer import create_model
  return create_model(cfg)


def load_codecs(cfg: Config, audio_dir: str | None = None, video_dir: str | None = None, seed: int = 0):
  """-> `(audio_codec, video_codec, info)`; trained from run directories or random init.

  A trained codec must match the config's codec section (same token format).
  """
  from wan_streamer_jax.codecs import AudioCodec, VideoCodec
  from wan_streamer_jax.codecs.training import load_codec
  info = {}
  codecs = {}
  for kind, run_dir, cls, want in (("audio", audio_dir, AudioCodec, cfg.audio), ("video", video_dir, VideoCodec,
                                                                                  cfg.video)):
    if run_dir:
      codec, got_kind, step = load_codec(run_dir)
      if got_kind != kind:
        raise ValueError(f"{kind}_codec {run_dir}: expected a {kind} codec run, received a {got_kind} codec")
      if codec.cfg != want:
        raise ValueError(f"{kind}_codec {run_dir}: its config {codec.cfg} differs from the model's "
                         f"{kind} config {want}")
      info[kind] = {"source": os.path.abspath(run_dir), "step": int(step)}
    else:
      codec = cls(want, rngs=nnx.Rngs(seed))
      info[kind] = {"source": "random_init", "seed": seed}
    codecs[kind] = codec
  return codecs["audio"], codecs["video"], info


def random_model(cfg: Config, seed: int = 0):
  """A random-init WanStreamer, initialised inside one jit (eager init compiles every op: ~10x slower)."""
  from wan_streamer_jax.model.transformer import create_model
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: create_model(cfg, seed)))
  return nnx.merge(graphdef, jax.jit(lambda: nnx.split(create_model(cfg, seed))[1])())


def load_engine(checkpoint: str | None, *, cfg: Config | None = None, step: int | None = None,
                audio_codec: str | None = None, video_codec: str | None = None, num_slots: int = 1,
                sampling: dict | None = None, attention_impl: str = "xla", max_units: int | None = None,
                seed: int = 0):
  """A `StreamingEngine` over a training run's weights (or random init when `checkpoint` is None).

  -> `(engine, info)`; `info` names the sources of every weight (JSON-able). `cfg` overrides
  the saved config (the model section may differ only in `STREAM_TUNABLE`); without a
  checkpoint it is required. `max_units`: the cache capacity, needed (only) by a config
  without an attention window.
  """
  from wan_streamer_jax.streaming import SamplingConfig, StreamingEngine
  if checkpoint is None and cfg is None:
    raise ValueError("load_engine: expected a checkpoint or a config (random init), received neither")
  if checkpoint:
    cfg, model, step = load_model(checkpoint, step, cfg)
    source = {"checkpoint": checkpoint_dir(checkpoint), "step": int(step)}
  else:
    model = random_model(cfg, seed)
    source = {"checkpoint": "random_init", "seed": seed}
  if cfg.model.window_units is not None:
    max_units = None
  audio, video, codec_info = load_codecs(cfg, audio_codec, video_codec, seed)
  engine = StreamingEngine(cfg, model, audio, video, num_slots, SamplingConfig(**(sampling or {})),
                           max_units=max_units, attention_impl=attention_impl)
  return engine, {"model": source, "codecs": codec_info, "attention_impl": attention_impl,
                  "cache_units": engine.capacity_units}
