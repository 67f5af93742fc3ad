"""Talk to the model: a real-time duplex WebSocket server and its web page, many sessions per step.

    python -m launch.serve --artifact=/tmp/wan_art --port=8998 --sessions=4          # launch.export's artifact
    python -m launch.serve --checkpoint=/tmp/wan_run --sessions=4                     # exports it on the fly
    python -m launch.serve --config=configs/small.py --sessions=4                     # random init (a demo)

Open http://127.0.0.1:8998/ (Start: microphone + camera), or stream a recording with
`python -m wan_streamer_jax.serving.client`. SIGTERM / Ctrl-C shut it down cleanly.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

_ARTIFACT = flags.DEFINE_string("artifact", None, "A serving artifact (launch.export --out).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "launch.train --workdir: exported on the fly (no --artifact).")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config (random init without --checkpoint/--artifact).")
_AUDIO_CODEC = flags.DEFINE_string("audio_codec", None, "launch.train_codec run dir (with --checkpoint/--config).")
_VIDEO_CODEC = flags.DEFINE_string("video_codec", None, "launch.train_codec run dir (with --checkpoint/--config).")
_SEED = flags.DEFINE_integer("seed", 0, "Random-init seed (no checkpoint).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to listen on.")
_PORT = flags.DEFINE_integer("port", 8998, "TCP port.")
_SESSIONS = flags.DEFINE_integer("sessions", None, "Concurrent sessions (default: the artifact's slots; 4 when exporting).")
_BUFFER_UNITS = flags.DEFINE_integer("buffer_units", 4, "Client units a session may buffer (flow control).")


def load_runner():
  """The step runner: the artifact, or the checkpoint/config exported to a temporary artifact."""
  from wan_streamer_jax.export import load_server
  if _ARTIFACT.value:
    return load_server(_ARTIFACT.value)
  if not (_CHECKPOINT.value or _CONFIG.value):
    raise app.UsageError("give --artifact, --checkpoint or --config")
  from wan_streamer_jax.config import Config
  from wan_streamer_jax.export.checkpoints import load_engine
  from wan_streamer_jax.export.engine_artifact import serve_engine
  cfg = Config.from_dict(_CONFIG.value) if _CONFIG.value is not None else None
  engine, sources = load_engine(_CHECKPOINT.value, cfg=cfg, audio_codec=_AUDIO_CODEC.value,
                                video_codec=_VIDEO_CODEC.value, num_slots=_SESSIONS.value or 4,
                                attention_impl="xla", seed=_SEED.value)
  server, path = serve_engine(engine, metadata={"sources": sources})
  logging.info("exported %s to %s", sources, path)
  return server


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  from wan_streamer_jax.serving.server import serve
  serve(load_runner(), host=_HOST.value, port=_PORT.value, sessions=_SESSIONS.value,
        buffer_units=_BUFFER_UNITS.value)


def run():
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
