"""Export the streaming step as a serving artifact (jax.export + flat params + manifest).

    python -m launch.export --checkpoint=/tmp/wan_run --out=/tmp/wan_art --platforms=cpu,cuda,tpu --slots=4
    python -m launch.export --checkpoint=/tmp/wan_run --out=/tmp/wan_art --param_dtype=bfloat16

The step is lowered from this machine for every platform in `--platforms` with a fixed pool
of `--slots` sessions and the `xla` attention. Load it without the model code:
`wan_streamer_jax.export.load_server(OUT)`. Prints the manifest's summary as one JSON line.
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
_OUT = flags.DEFINE_string("out", None, "Artifact folder to write.", required=True)
_PLATFORMS = flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"], "Lowering platforms.")
_SLOTS = flags.DEFINE_integer("slots", 4, "Session slots of the exported pool (fixed).")
_PARAM_DTYPE = flags.DEFINE_enum("param_dtype", "as_trained", ["as_trained", "bfloat16"], "Stored parameter dtype.")
_SEED = flags.DEFINE_integer("seed", 0, "Random-init seed (no checkpoint).")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Sampling temperature baked into the step.")
_TOP_K = flags.DEFINE_integer("top_k", None, "Top-k baked into the step.")
_CACHE_UNITS = flags.DEFINE_integer("cache_units", None, "KV-cache capacity in units; required (only) when "
                                    "the config has no attention window.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing artifact (only once the new one is complete).")


def main(argv):
  del argv
  from wan_streamer_jax.config import Config
  from wan_streamer_jax.export.checkpoints import load_engine
  from wan_streamer_jax.export.engine_artifact import export_engine

  cfg = Config.from_dict(_CONFIG.value) if _CONFIG.value is not None else None
  sampling = {k: v for k, v in (("temperature", _TEMPERATURE.value), ("top_k", _TOP_K.value)) if v is not None}
  engine, sources = load_engine(_CHECKPOINT.value, cfg=cfg, step=_STEP.value, audio_codec=_AUDIO_CODEC.value,
                                video_codec=_VIDEO_CODEC.value, num_slots=_SLOTS.value, sampling=sampling,
                                attention_impl="xla", max_units=_CACHE_UNITS.value, seed=_SEED.value)
  manifest = export_engine(engine, _OUT.value, platforms=_PLATFORMS.value,
                           param_dtype=None if _PARAM_DTYPE.value == "as_trained" else _PARAM_DTYPE.value,
                           metadata={"sources": sources}, overwrite=_OVERWRITE.value)
  sizes = {f: os.path.getsize(os.path.join(_OUT.value, f)) for f in manifest["files"]}
  print(json.dumps({"out": os.path.abspath(_OUT.value), "platforms": manifest["platforms"],
                    "num_slots": manifest["num_slots"], "param_dtype": manifest["param_dtype"],
                    "inputs": manifest["inputs"], "outputs": manifest["outputs"], "bytes": sizes,
                    "sources": sources}, sort_keys=True), flush=True)


def run():
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
