"""Stream a conversation through the model, 160 ms at a time, and write what it said and showed.

    python -m launch.stream --checkpoint=/tmp/wan_run --input=validation:3 --out_dir=/tmp/wan_stream
    python -m launch.stream --checkpoint=/tmp/wan_run --input=/path/to/call_0001   # user.wav [+ user.mp4]
    python -m launch.stream --checkpoint=/tmp/wan_run --input=me.mp4 --audio_codec=... --video_codec=...
    python -m launch.stream --config=configs/stream_demo.py --input=validation:0   # random init (speed)

`--input` is `SPLIT:INDEX` of the synthetic corpus (generated on the fly, or read from
`--data_dir`), a conversation folder (`data_pipelines/folder_builder.py` layout: user.wav,
optional user.mp4 / user_frames/, transcript.json), a .wav (camera off) or an .mp4 (its audio
track, or a .wav of the same name beside it). Units are fed on the 160 ms clock
(`--realtime`, default) or as fast as possible (`--norealtime`). Writes NAME_stereo.wav (user
left, model right), NAME.mp4 (user | avatar, both voices), NAME_transcript.json/.txt,
NAME_latency.png and NAME_report.json into `--out_dir`; prints the report as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "launch.train --workdir (random init when unset; "
                                  "then --config is required).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config (default: the checkpoint's).")
_AUDIO_CODEC = flags.DEFINE_string("audio_codec", None, "launch.train_codec run dir (default: random init).")
_VIDEO_CODEC = flags.DEFINE_string("video_codec", None, "launch.train_codec run dir (default: random init).")
_INPUT = flags.DEFINE_string("input", "validation:0", "SPLIT:INDEX of the synthetic corpus, or a recording path.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir of a built synthetic corpus (SPLIT:INDEX inputs).")
_CORPUS_SIZE = flags.DEFINE_string("corpus_size", "tiny", "Size of the built corpus in --data_dir.")
_CORPUS_SEED = flags.DEFINE_integer("corpus_seed", 0, "Corpus seed.")
_OUT_DIR = flags.DEFINE_string("out_dir", "/tmp/wan_stream", "Output folder.")
_REALTIME = flags.DEFINE_bool("realtime", True, "Feed units on the 160 ms clock (else as fast as possible).")
_MAX_UNITS = flags.DEFINE_integer("max_units", None, "Stream at most this many units.")
_SLOTS = flags.DEFINE_integer("slots", 1, "Session slots in the pool (the conversation uses --slot).")
_SLOT = flags.DEFINE_integer("slot", 0, "Slot of the conversation.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (and random-init seed).")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Sampling temperature (default: the engine's).")
_TOP_K = flags.DEFINE_integer("top_k", None, "Top-k sampling (default: the engine's).")
_ATTENTION = flags.DEFINE_string("attention_impl", "xla", "The step's attention (xla | pallas | reference).")
_MP4 = flags.DEFINE_bool("mp4", True, "Write the side-by-side MP4.")


def main(argv):
  del argv
  from tqdm import tqdm
  from wan_streamer_jax.config import Config
  from wan_streamer_jax.export.checkpoints import load_engine, load_run_config
  from wan_streamer_jax.streaming import recording
  from wan_streamer_jax.streaming.driver import drive_recording

  cfg = Config.from_dict(_CONFIG.value) if _CONFIG.value is not None else None
  if cfg is None:
    if not _CHECKPOINT.value:
      raise app.UsageError("give --checkpoint (a launch.train --workdir) or --config (random init)")
    cfg = load_run_config(_CHECKPOINT.value, _STEP.value)
  split, _, index = _INPUT.value.partition(":")
  if index.isdigit() and not os.path.exists(_INPUT.value):
    rec = recording.synthetic_recording(cfg, split, int(index), seed=_CORPUS_SEED.value, data_dir=_DATA_DIR.value,
                                        size=_CORPUS_SIZE.value)
  else:
    rec = recording.load_recording(_INPUT.value, cfg)
  if _MAX_UNITS.value:
    rec = rec.truncated(_MAX_UNITS.value)
  sampling = {k: v for k, v in (("temperature", _TEMPERATURE.value), ("top_k", _TOP_K.value)) if v is not None}
  # Without an attention window the cache holds the whole conversation (exact streaming).
  engine, sources = load_engine(_CHECKPOINT.value, cfg=cfg, step=_STEP.value, audio_codec=_AUDIO_CODEC.value,
                                video_codec=_VIDEO_CODEC.value, num_slots=_SLOTS.value, sampling=sampling,
                                attention_impl=_ATTENTION.value, max_units=max(rec.num_units, cfg.model.sink_units + 1),
                                seed=_SEED.value)
  with tqdm(total=rec.num_units, unit="unit", desc=rec.name, file=sys.stderr) as bar:
    report, recorder, _ = drive_recording(engine.step, engine.params, engine.init_state(seed=_SEED.value), rec,
                                          silent_inputs=engine.silent_inputs(), slot=_SLOT.value,
                                          seed=_SEED.value, realtime=_REALTIME.value,
                                          progress=lambda n: bar.update(n - bar.n))
  files = recorder.write(_OUT_DIR.value, report, sample_rate=cfg.audio.sample_rate, mp4=_MP4.value)
  print(json.dumps({"recording": rec.name, "config": cfg.name, "sources": sources, **report.summary(),
                    "files": files}, sort_keys=True), flush=True)


def run():
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
