"""A random-init tiny model through the whole evaluation: streaming engine -> scores -> report and media.

Its figures are bad (it is untrained); the test asserts they are well formed and
finite, that the model's streams have the engine's shapes, and that the
reference row scored beside it still meets the ceilings.
"""

import json
import math
import os

import numpy as np
import pytest

from wan_streamer_jax.codecs.training import create_codec
from wan_streamer_jax.config import load_config
from wan_streamer_jax.evaluation import runner
from wan_streamer_jax.export.checkpoints import load_engine

CFG = load_config("configs/tiny.py")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  examples = runner.held_out_dialogues(CFG, split="test", num=1, start=3)  # greeting + colour, 49 units
  engine, _ = load_engine(None, cfg=CFG, num_slots=2, seed=0, max_units=int(examples[0]["num_units"]))
  out = str(tmp_path_factory.mktemp("eval_model"))
  codec = create_codec(CFG, "audio", seed=1)  # random init: the codec row is well formed, not intelligible
  return runner.evaluate(examples, CFG, out, engine=engine, audio_codec=codec), examples


def _check_well_formed(tree, path=""):
  if isinstance(tree, dict):
    for k, v in tree.items():
      _check_well_formed(v, f"{path}.{k}")
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      _check_well_formed(v, f"{path}[{i}]")
  elif isinstance(tree, float):
    assert math.isfinite(tree), path


def test_model_row_is_well_formed_and_finite(result):
  res, examples = result
  assert set(res["summary"]) == {"reference", "reference_codec", "model"}
  for row in ("reference_codec", "model"):
    _check_well_formed(res["summary"][row])
    _check_well_formed(res["scores"][row])
  h = res["headline"]["model"]
  for key in ("pause_takeover_rate", "turn_taking_takeover_rate", "colour_text_accuracy", "colour_speech_accuracy"):
    assert h[key] is None or 0.0 <= h[key] <= 1.0, (key, h[key])
  assert h["reply_log_mel_distance"] is not None and h["reply_log_mel_distance"] >= 0.0
  s = res["summary"]["model"]
  assert s["turn_taking"]["n"] == res["summary"]["reference"]["turn_taking"]["n"] > 0  # the same user script
  with np.load([p for p in res["files"]["media"] if p.endswith("model_streams.npz")][0]) as z:
    n = int(examples[0]["num_units"])
    assert z["audio"].shape == (n * CFG.audio.samples_per_unit,) and np.all(np.isfinite(z["audio"]))
    assert np.abs(z["audio"]).max() <= 1.0
    assert z["video"].shape == (n * 4, CFG.video.height, CFG.video.width, 3) and z["video"].dtype == np.uint8
    assert z["text"].shape == (n, CFG.text.text_slots) and set(np.unique(z["turn_state"])) <= {0, 1, 2}


def test_targets_are_checked_against_the_reference(result):
  t = result[0]["targets"]
  assert t["turn_taking_takeover_rate"]["met"] in (True, False) and t["pause_takeover_rate"]["target"] == "<= 0.2"
  for v in t.values():
    assert v["met"] is None or v["met"] == bool(v["met"])
  # The reference row checked as if it were a model meets every target it has events for.
  s = result[0]["summary"]["reference"]
  from wan_streamer_jax.evaluation import report
  checked = report.targets(s, s)
  assert all(v["met"] in (True, None) for v in checked.values())
  assert checked["turn_taking_latency_vs_reference_s"]["value"] == 0.0
  assert checked["turn_taking_takeover_rate"]["n"] == s["turn_taking"]["n"] > 0
  # A model that never talks: it fails turn-taking, and its 0 s "stop latency" is shown as no real stop.
  model = result[0]["summary"]["model"]
  silent = {**model, "turn_taking": {**model["turn_taking"], "takeover_rate": 0.0},
            "interruption": {**model["interruption"], "median_stop_latency_s": 0.0, "talking_at_barge_in": 0.0}}
  failed = report.targets(silent, s)
  assert failed["turn_taking_takeover_rate"]["met"] is False
  assert failed["interruption_talking_at_barge_in"] == {"value": 0.0, "target": "context for the row above",
                                                        "met": None, "reference": s["interruption"]["talking_at_barge_in"],
                                                        "n": model["interruption"]["n"]}
  table = report.targets_table(failed).splitlines()
  assert len(table) == 2 + len(failed)
  row = next(r for r in table if r.startswith("| turn_taking_takeover_rate |")).split(" | ")
  assert row[2:5] == ["0.000", ">= 0.9", "**no**"] and row[-1] == "0.941 |"


def test_reference_row_beside_it_meets_the_ceilings(result):
  s = result[0]["summary"]["reference"]
  assert s["turn_taking"]["takeover_rate"] == 1.0
  assert s["answers"]["colour"]["text_accuracy"] == 1.0 and s["answers"]["colour"]["speech_accuracy"] == 1.0
  assert s["lip_sync"]["median_best_lag"] == 0 and s["reply_speech"]["mean_log_mel_distance"] < 1e-3


def test_outputs_a_person_can_check(result):
  res, _ = result
  with open(res["files"]["report"]) as f:
    assert json.load(f)["headline"]["model"] == res["headline"]["model"]
  names = {os.path.basename(p) for p in res["files"]["media"] + res["files"]["timelines"]}
  for row in ("reference", "model"):
    assert {f"test-0-0000003_{row}_stereo.wav", f"test-0-0000003_{row}.png"} <= names
    if any(n.endswith(".mp4") for n in names):
      assert f"test-0-0000003_{row}.mp4" in names
  assert all(os.path.getsize(p) > 1000 for p in res["files"]["media"] + res["files"]["timelines"])
