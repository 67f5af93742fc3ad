"""Serving tests' shared pieces: one exported tiny artifact per test session, recordings, references."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import tiny_config
from wan_streamer_jax.config import TextConfig

SLOTS = 4


def serving_config():
  """The tiny model with a ring cache (8 + 1 sink units) and slimmer codecs (compiles faster)."""
  return tiny_config(**{"model.window_units": 8, "model.sink_units": 1, "audio.channels": (16, 32),
                        "audio.dilations": (1,), "audio.latent_dim": 8, "video.channels": (8, 16)})


_SHARED: dict = {}  # one artifact and one loaded runner per test session, whichever module asks first


@pytest.fixture(scope="session")
def artifact(tmp_path_factory) -> str:
  """A real serving artifact: the tiny engine (random init) exported with 4 slots."""
  if "artifact" not in _SHARED:
    from wan_streamer_jax.export.checkpoints import load_engine
    from wan_streamer_jax.export.engine_artifact import export_engine
    engine, _ = load_engine(None, cfg=serving_config(), num_slots=SLOTS, attention_impl="xla")
    path = str(tmp_path_factory.mktemp("serving") / "artifact")
    export_engine(engine, path)
    _SHARED["artifact"] = path
  return _SHARED["artifact"]


@pytest.fixture(scope="session")
def runner(artifact):
  if "runner" not in _SHARED:
    from wan_streamer_jax.export import load_server
    _SHARED["runner"] = load_server(artifact)
  return _SHARED["runner"]


_RECORDINGS: dict = {}


def recording(index: int, units: int):
  """Held-out (test split) synthetic conversation `index`, first `units` units."""
  if index not in _RECORDINGS:
    from wan_streamer_jax.streaming.recording import synthetic_recording
    _RECORDINGS[index] = synthetic_recording(serving_config(), "test", index)
  return _RECORDINGS[index].truncated(units)


def alone(runner, rec, seed: int) -> dict:
  """What launch.stream gives the recording alone: `drive_recording` (slot 0, every other slot idle,
  sampling seed `seed`) over the same artifact's step."""
  from wan_streamer_jax.streaming.driver import drive_recording
  _, recorder, _ = drive_recording(lambda params, state, inputs, active, reset: runner.step(state, inputs, active, reset),
                                   None, runner.init_state(0), rec, silent_inputs=runner.silent_inputs(), slot=0,
                                   seed=seed, realtime=False)
  return {"audio": np.stack(recorder.audio), "video": np.stack(recorder.video), "text": np.stack(recorder.text),
          "turn_state": np.asarray(recorder.turn, np.int32), "unit": np.asarray(recorder.units, np.int32)}


def assert_same_outputs(got: dict, want: dict, what: str) -> None:
  for k in ("audio", "video", "text", "turn_state", "unit"):
    np.testing.assert_array_equal(got[k], want[k], err_msg=f"{what}: {k}")


def has_typed_text(rec) -> bool:
  return bool(np.any((rec.text != TextConfig.PAD) & (rec.text != TextConfig.MISSING)))
