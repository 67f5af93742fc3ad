"""Train a causal codec on the corpus' raw windows.

    python -m launch.make_dataset --config=small --size=small --data_dir=DATA
    python -m launch.train_codec --config=codec_audio_small --data_dir=DATA --workdir=runs/codec_audio_small
    python -m launch.train_codec --config=codec_video_small --data_dir=DATA --workdir=runs/codec_video_small

The codec kind and every run setting (loss weights, windows, evaluation) are
in the config's `codec_train` section (`--config.codec_train.eval_every=500`),
saved with the checkpoint (`--config.codec_train.adv_weight=1 --config.codec_train.fm_weight=2`
adds the audio discriminator of `codecs/adversarial.py`; off by default). `--data=synthetic`
trains on generated tones / moving squares (smoke runs without a corpus). Writes into `--workdir`:
  checkpoints/   Orbax: params, optimizer, data-iterator state, config (resumes from the newest
                 readable step; SIGTERM / Ctrl-C save before exiting)
  metrics.jsonl  every logged step (loss parts, grad norm, perplexity per quantiser, units/s)
  tb/            TensorBoard scalars, and audio / image samples of the final evaluation
  samples/step_<N>/  the same samples as files: sample_<i>_{reference,reconstruction}.wav (audio),
                 sample_<i>.png (video; top reference frames, bottom reconstruction)
  eval.json      held-out metrics of the final codec (`codec_train.eval_split`)
"""

from __future__ import annotations

import json
import os

from absl import flags

from launch import common

_CONFIG = common.config_flag("codec_audio_small", "Codec run config (file or shipped name).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default /tmp/codec_runs/<config name>).")
_DATA = flags.DEFINE_enum("data", "corpus", ["corpus", "synthetic"], "Training windows source.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding the synthetic dialogue corpus.")
_SIZE = flags.DEFINE_enum("corpus_size", "small", ["tiny", "small", "full"], "Corpus size to read.")
_INIT_FROM = flags.DEFINE_string("init_from", None, "Initialise the parameters from this codec run's workdir.")
_ALLOW_MISMATCH = flags.DEFINE_bool("allow_mismatch", False, "Resume although the saved config / data differ.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", 1, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", 0, "This process's index (multi-host).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a tqdm progress bar on stderr.")


def main(argv):
  del argv
  from wan_streamer_jax.parallel import multihost
  multihost.initialize(_COORD.value, _NPROC.value, _PID.value)

  import jax
  from wan_streamer_jax.codecs import training
  from wan_streamer_jax.codecs.train_task import codec_task
  from wan_streamer_jax.config import Config
  from wan_streamer_jax.parallel.mesh import make_mesh
  from wan_streamer_jax.train import loop

  cfg = Config.from_dict(_CONFIG.value)
  kind = training.codec_kind(cfg)
  ct = cfg.codec_train
  workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value or f"/tmp/codec_runs/{cfg.name}"))
  mesh = make_mesh(cfg.mesh, batch_size=cfg.train.batch_size)
  print(f"{kind} codec {cfg.name}: {training.codec_config(cfg, kind).bitrate_bps:.0f} bps, mesh "
        f"{dict(mesh.shape)}, workdir {workdir}", flush=True)
  if _DATA.value == "synthetic":
    from wan_streamer_jax.codecs.synthetic import SyntheticSignalSource
    train_src = SyntheticSignalSource(cfg, 256, seed=0)
    eval_src = SyntheticSignalSource(cfg, 32, seed=1 if ct.eval_split == "validation" else 2)
    info = {"source": "synthetic"}
  else:
    from data_pipelines.synthetic_builder import make_synthetic_builder
    from wan_streamer_jax.config import ConfigError
    builders = {}
    for voices in {ct.train_voices, "classic"}:  # evaluation always reads the classic corpus
      builders[voices] = make_synthetic_builder(cfg, _SIZE.value, data_dir=_DATA_DIR.value, user_voices=voices)
      if not builders[voices].is_prepared():
        raise ConfigError(f"no {_SIZE.value} corpus for {cfg.name} under {builders[voices].data_dir}; build it "
                          f"with: python -m launch.make_dataset --config=<model config> --size={_SIZE.value} "
                          f"--user_voices={voices} --data_dir={_DATA_DIR.value or '~/tensorflow_datasets'}")
    train_src = builders[ct.train_voices].as_data_source("train")
    eval_src = builders["classic"].as_data_source(ct.eval_split)
    info = {"source": "corpus", "corpus": os.path.abspath(str(builders[ct.train_voices].data_dir))}
    if ct.cache_streams == "yes" or (ct.cache_streams == "auto" and kind == "audio"):
      train_src = training.StreamCache(train_src, kind)
  augment = None
  if ct.augment and kind == "audio":
    from data_pipelines.augment import BabbleSource, CodecAugment
    ccfg = training.codec_config(cfg, kind)
    babble = (BabbleSource(train_src, cfg.train.units_per_example * ccfg.samples_per_unit)
              if _DATA.value == "corpus" else None)
    augment = CodecAugment(ccfg.sample_rate, babble)
  task = codec_task(cfg, mesh, train_src, eval_src, data_info=info, window_map=augment)
  summary = loop.train(task, workdir=workdir, init_from=_INIT_FROM.value, allow_mismatch=_ALLOW_MISMATCH.value,
                       progress=_PROGRESS.value)
  if summary.final and jax.process_index() == 0:
    result = {**summary.final, "data": _DATA.value, "steps_this_run": summary.end_step - summary.start_step}
    name = "eval.json" if ct.eval_split == "validation" else f"eval_{ct.eval_split}.json"
    with open(os.path.join(workdir, name), "w") as f:
      json.dump(result, f, indent=1)
    print(json.dumps(result), flush=True)


def run():
  common.run(main)


if __name__ == "__main__":
  run()
