"""The reference row: the corpus' own model streams played as the model meet every ceiling.

This checks the metric code end to end (events from the script, timelines from
audio and text, the recogniser's grammars, lip sync, report and plots) through
`runner.evaluate`, the code path the model row takes.
"""

import json
import os

import pytest

from data_pipelines.corpus import CorpusSpec, generate_conversation
from wan_streamer_jax.config import Config
from wan_streamer_jax.evaluation import runner

CFG = Config()


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  # Five test dialogues that hold every kind of event: pauses, turn ends, interruptions and the three
  # answer tasks (interrupt+backchannel, colour+arithmetic+interrupt, colour+arithmetic,
  # repeat+arithmetic+backchannel, repeat).
  spec = CorpusSpec.from_config(CFG)
  examples = [generate_conversation(spec, "test", i) for i in (1, 7, 8, 14, 15)]
  return runner.evaluate(examples, CFG, str(tmp_path_factory.mktemp("eval")), mp4=False)


def test_reference_row_meets_the_ceilings(result):
  s = result["summary"]["reference"]
  assert s["pause_handling"]["n"] > 0 and s["pause_handling"]["takeover_rate"] == 0.0
  assert s["turn_taking"]["n"] > 0 and s["turn_taking"]["takeover_rate"] == 1.0
  # The corpus replies 2 units after the unit where the user stops: 0.16 .. 0.32 s after the last sample.
  assert 0.16 <= s["turn_taking"]["median_latency_s"] <= 0.32 + 1e-6
  assert s["interruption"]["n"] > 0 and s["interruption"]["talking_at_barge_in"] == 1.0
  assert s["interruption"]["median_stop_latency_s"] <= 0.48 + 1e-6  # the corpus stops within 3 units
  assert s["interruption"]["takeover_rate_after"] == 1.0
  assert s["backchannel"]["per_second"] > 0.2
  for task in ("arithmetic", "colour", "repeat"):
    a = s["answers"][task]
    assert a["n"] > 0 and a["text_accuracy"] == 1.0, (task, a)
    assert a["speech_accuracy"] >= 0.8, (task, a)  # the recogniser's ceiling on the reference speech
    assert a["chance"]["guess"] < 0.2
  assert s["lip_sync"]["median_best_lag"] == 0 and s["lip_sync"]["within_one_frame"] == 1.0
  assert s["lip_sync"]["mean_peak_correlation"] > 0.9
  assert s["reply_speech"]["replied"] == 1.0 and s["reply_speech"]["mean_log_mel_distance"] < 1e-3


def test_report_and_timelines_are_written(result):
  with open(result["files"]["report"]) as f:
    saved = json.load(f)
  assert saved["headline"]["reference"] == result["headline"]["reference"]
  assert len(saved["scores"]["reference"]) == 5 and "| turn_taking_takeover_rate |" in saved["table"]
  assert len(result["files"]["timelines"]) == 5
  wavs = [p for p in result["files"]["media"] if p.endswith("_stereo.wav")]
  assert len(wavs) == 5
  from scipy.io import wavfile
  rate, pcm = wavfile.read(wavs[0])
  assert rate == CFG.audio.sample_rate and pcm.ndim == 2 and pcm.shape[1] == 2 and pcm.std(axis=0).min() > 0
  for path in result["files"]["timelines"]:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 10_000


def test_held_out_only():
  with pytest.raises(ValueError, match="held-out"):
    runner.held_out_dialogues(CFG, split="train", num=1)


def test_held_out_dialogues_read_the_corpus_they_are_told():
  """A word-by-word corpus is another corpus: its held-out dialogues are its own, generated or read."""
  import numpy as np
  spec = CorpusSpec.from_config(CFG, word_by_word_replies=True)
  words = runner.held_out_dialogues(CFG, split="test", num=1, start=3, word_by_word_replies=True)[0]
  plain = runner.held_out_dialogues(CFG, split="test", num=1, start=3)[0]
  assert np.array_equal(words["model_audio"], generate_conversation(spec, "test", 3)["model_audio"])
  assert words["model_audio"].shape != plain["model_audio"].shape or not np.array_equal(words["model_audio"],
                                                                                         plain["model_audio"])
  with pytest.raises(ValueError, match="no prepared corpus"):
    runner.held_out_dialogues(CFG, split="test", num=1, data_dir="/nonexistent_wan_corpus", word_by_word_replies=True)


def test_launcher_writes_the_reference_report(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / "eval"
  proc = subprocess.run([sys.executable, "-m", "launch.evaluate", "--config=configs/tiny.py", "--num=1", "--start=3",
                         f"--out_dir={out}", "--nomedia", "--noplots"], cwd=root, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "| turn_taking_takeover_rate | 1.000 |" in proc.stdout
  with open(out / "report.json") as f:
    report = json.load(f)
  assert report["headline"]["reference"]["colour_text_accuracy"] == 1.0 and report["dialogues"] == ["test-0-0000003"]
