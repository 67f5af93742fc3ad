"""A codec's half of a training run (`train.loop.Task`): replicated state, step, raw windows, evaluation.

    task = codec_task(cfg, mesh, train_source, eval_source, data_info={...})
    summary = loop.train(task, workdir="runs/codec_audio_small")

`cfg.codec_train` holds the run settings (kind, loss weights, windows,
evaluation); they are saved with the checkpoint. Batches: this process's rows
of raw windows (`data_pipelines.pipelines.raw_pipeline`), audio float32
`[B, N * samples_per_unit]` or video uint8 `[B, N * 4, H, W, 3]`; the Grain
iterator position is checkpointed.

Per-batch data transforms: `batch_transform(batch, step) -> batch` (host
numpy, this process's rows, before the audio speech selection) is the place
for augmentations that are not Grain maps; a transform must be a pure
function of `(batch, step)` so that a resumed run sees the same data.
"""

from __future__ import annotations

import io
import os
import wave as wavelib

import jax
import numpy as np
from flax import nnx

from wan_streamer_jax.codecs import training
from wan_streamer_jax.config import Config
from wan_streamer_jax.train.feed import process_slice, to_global
from wan_streamer_jax.train.loop import Task
from wan_streamer_jax.train.optimizer import learning_rate_schedule, make_optimizer

EVAL_BATCH = 8


def _add_wav(tb, tag: str, wave, sample_rate: int, step: int) -> None:
  """TensorBoard audio summary from a float waveform (WAV-encoded here: no soundfile dependency)."""
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


def write_samples(tb, kind: str, samples: dict, sample_rate: int, step: int) -> None:
  """Reference / reconstruction pairs of an evaluation as TensorBoard audio or image strips."""
  for i in range(len(samples["reference"])):
    ref, rec = samples["reference"][i], samples["reconstruction"][i]
    if kind == "audio":
      for name, w in (("reference", ref), ("reconstruction", rec)):
        _add_wav(tb, f"eval/{i}/{name}", w, sample_rate, step)
    else:
      tb.add_image(f"eval/{i}/top_reference_bottom_reconstruction", _video_strip(ref, rec), step,
                   dataformats="HWC")


def _video_strip(ref, rec) -> np.ndarray:
  """Up to 8 frames `[H, W, 3]` in a row: reference on top, reconstruction below -> `[2H, nW, 3]`."""
  n = min(8, ref.shape[0])
  return np.concatenate([np.concatenate(list(ref[:n]), 1), np.concatenate(list(rec[:n]), 1)], 0)


def write_sample_files(folder: str, kind: str, samples: dict, sample_rate: int) -> list[str]:
  """The same pairs as files a user can open: `sample_<i>_{reference,reconstruction}.wav` (16-bit mono)
  for audio, `sample_<i>.png` (top: reference frames, bottom: reconstruction; frames under 128 px scaled
  up by an integer factor) for video. Returns the paths."""
  from data_pipelines.media_io import write_wav
  os.makedirs(folder, exist_ok=True)
  paths = []
  for i in range(len(samples["reference"])):
    ref, rec = samples["reference"][i], samples["reconstruction"][i]
    if kind == "audio":
      for name, w in (("reference", ref), ("reconstruction", rec)):
        paths.append(os.path.join(folder, f"sample_{i}_{name}.wav"))
        write_wav(paths[-1], np.clip(np.asarray(w, np.float32), -1, 1), sample_rate)
    else:
      import matplotlib
      matplotlib.use("Agg")
      import matplotlib.pyplot as plt
      strip = _video_strip(ref, rec)
      scale = max(1, 128 // ref.shape[1])  # small frames blown up (nearest) so that a viewer shows them
      strip = np.repeat(np.repeat(strip, scale, 0), scale, 1)
      paths.append(os.path.join(folder, f"sample_{i}.png"))
      plt.imsave(paths[-1], np.asarray(strip, np.uint8))
  return paths


def codec_task(cfg: Config, mesh, train_source, eval_source=None, *, data_info: dict | None = None,
               batch_transform=None, window_map=None) -> Task:
  """A `loop.Task` training `cfg.codec_train.kind`'s codec on `train_source` (corpus conversations).

  `window_map` (a seeded Grain `RandomMap`, e.g. `data_pipelines.augment.CodecAugment`) runs on each
  training window before batching; a window it marks with `speech_activity` (of the clean audio) is
  ranked by that in the speech selection.
  """
  from data_pipelines.pipelines import raw_pipeline
  kind = training.codec_kind(cfg)
  ct, ccfg = cfg.codec_train, training.codec_config(cfg, kind)
  graphdef, params0 = nnx.split(training.create_codec(cfg, kind, cfg.train.seed))
  tx = make_optimizer(cfg.optimizer)
  rep = training.replicated(mesh)
  abstract_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), params0)
  abstract_opt = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
                              jax.eval_shape(tx.init, params0))
  if ct.adversarial:  # state (params, opt, adv); the checkpoint's opt item is {"codec": opt, "adv": adv}
    from wan_streamer_jax.codecs import adversarial
    d_graphdef, d_params0 = nnx.split(adversarial.create_discriminator(cfg, cfg.train.seed))
    d_tx = adversarial.discriminator_optimizer(cfg)
    abstract_adv = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
                                jax.eval_shape(lambda p: adversarial.init_adv_state(p, d_tx), d_params0))
    adv_step = adversarial.make_adversarial_train_step(cfg, graphdef, tx, d_graphdef, d_tx, mesh, abstract_params,
                                                       abstract_opt, abstract_adv)

    def init():
      params = jax.device_put(params0, rep)
      return params, jax.device_put(tx.init(params), rep), jax.device_put(adversarial.init_adv_state(d_params0, d_tx),
                                                                          rep)

    def step(state, batch):
      params, opt, adv, m = adv_step(*state, batch)
      return (params, opt, adv), m

    abstract = lambda: (abstract_params, {"codec": abstract_opt, "adv": abstract_adv})
    split = lambda state: (state[0], {"codec": state[1], "adv": state[2]})
    join = lambda p, o: (p, o["codec"], o["adv"])
  else:
    step_fn = training.make_train_step(kind, cfg, graphdef, tx, mesh, abstract_params, abstract_opt)

    def init():
      params = jax.device_put(params0, rep)
      return params, jax.device_put(tx.init(params), rep)

    def step(state, batch):
      params, opt, m = step_fn(state[0], state[1], batch)
      return (params, opt), m

    abstract = lambda: (abstract_params, abstract_opt)
    split = lambda state: state
    join = lambda p, o: (p, o)

  rows = process_slice(cfg.train.batch_size)
  local_bs = rows.stop - rows.start
  over = ct.speech_oversample if kind == "audio" else 1
  data_iter = iter(raw_pipeline(train_source, cfg, units=cfg.train.units_per_example, batch_size=local_bs * over,
                                seed=cfg.train.seed, role=ct.role, num_threads=ct.data_threads, prefetch=4,
                                window_map=window_map))

  def transform(batch: dict, step_index: int) -> dict:
    if batch_transform is not None:
      batch = batch_transform(batch, step_index)
    if over > 1:  # keep the most speech-active windows (the corpus is mostly silence at any one time)
      active = (np.asarray(batch["speech_activity"]) if "speech_activity" in batch
                else training.speech_activity(batch[kind], ccfg.sample_rate))
      keep = np.sort(np.argsort(-active, kind="stable")[:local_bs])
      batch = {k: np.asarray(v)[keep] for k, v in batch.items()}
    return batch

  def run_eval(state, windows: int):
    codec = nnx.merge(graphdef, jax.device_get(state[0]))
    it = raw_pipeline(eval_source, cfg, units=ct.eval_units, batch_size=EVAL_BATCH, seed=1, shuffle=False,
                      num_epochs=1, role=ct.eval_role, process_index=0, process_count=1, drop_remainder=False)
    batches = (b for _, b in zip(range(max(1, -(-windows // EVAL_BATCH))), it))
    return training.evaluate(kind, codec, batches)

  def evaluate(state, step_index: int, final: bool) -> dict:
    res, _ = run_eval(state, max(EVAL_BATCH, ct.eval_windows // 4))
    return {k: v for k, v in res.items() if isinstance(v, (int, float))}

  def finish(state, step_index: int, tb) -> dict:
    if jax.process_index() != 0:
      return {}
    res, samples = run_eval(state, ct.eval_windows)
    sample_files = []
    if tb is not None:
      sr = getattr(ccfg, "sample_rate", 0)
      write_samples(tb, kind, samples, sr, step_index)
      sample_files = write_sample_files(os.path.join(os.path.dirname(tb.logdir), "samples", f"step_{step_index}"),
                                        kind, samples, sr)
    return {"config": cfg.name, "kind": kind, "steps": step_index, "eval_split": ct.eval_split,
            "batch_size": cfg.train.batch_size, "units_per_example": cfg.train.units_per_example,
            "backend": jax.default_backend(), "devices": jax.device_count(), "sample_files": sample_files, **res}

  key = kind
  lr = learning_rate_schedule(cfg.optimizer)
  return Task(
      kind=kind, cfg=cfg, mesh=mesh, init=init, abstract=abstract, step=step,
      next_batch=lambda step_index: next(data_iter),
      to_global=lambda b: to_global({key: b[key]}, {key: training.batch_sharding(mesh)}),
      split=split, join=join,
      data_info=dict(data_info or {}), data_iter=data_iter, transform=transform,
      evaluate=evaluate if eval_source is not None else None,
      finish=finish if eval_source is not None else None,
      units_per_step=cfg.train.batch_size * cfg.train.units_per_example,
      learning_rate=lambda s: float(np.asarray(lr(s))),
      postfix=(("loss", "psnr") if kind == "video" else
               ("loss", "mr_stft", *(("adv_discriminator",) if ct.adversarial else ()))),
  )
