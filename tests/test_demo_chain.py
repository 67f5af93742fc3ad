"""The whole chain on the tiny demo config: corpus -> codecs -> tokens -> train -> evaluate -> stream.

Every stage's output exists and is finite; a re-run skips every finished stage (and trains nothing);
a finished stage of another plan in the same workdir is refused, not overwritten.
"""

import dataclasses
import json
import os
import wave

import matplotlib.pyplot as plt  # headless: matplotlib picks Agg
import numpy as np
import pytest

from data_pipelines.token_data import TokenDataSource
from wan_streamer_jax.config import ConfigError
from wan_streamer_jax.demo.pipeline import STAGES, read_done, run_demo
from wan_streamer_jax.demo.plan import QUICK, CodecRun, OwnHistoryRun

# ~165 CPU-seconds in all (seven stages, each compiling its own functions): the suite's longest test.
pytestmark = pytest.mark.slow

# QUICK's shape at test size: 8-row batches (the 8 fake devices of conftest take one row each).
CHAIN = dataclasses.replace(
    QUICK, name="chain_test", corpus_counts={"train": 8, "validation": 8, "test": 2}, stream_max_units=24,
    audio_codec=CodecRun(num_steps=2, batch_size=8, units_per_example=2, log_every=1, checkpoint_every=0,
                         eval_windows=2),
    video_codec=CodecRun(num_steps=2, batch_size=8, units_per_example=2, log_every=1, checkpoint_every=0,
                         eval_windows=2, contrast_weight=12.0),
    transformer_steps=3, eval_dialogues=2, eval_slots=2, recognizer=False,
    own_history=OwnHistoryRun(num_steps=2, rate=1.0, warmup_steps=1),
    model_overrides={"train.batch_size": 8, "train.log_every": 1})


def _finite(tree) -> bool:
  leaves = []

  def walk(x):
    if isinstance(x, dict):
      for v in x.values():
        walk(v)
    elif isinstance(x, (list, tuple)):
      for v in x:
        walk(v)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
      leaves.append(float(x))
  walk(tree)
  return bool(leaves) and bool(np.isfinite(leaves).all())


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("demo"))
  return workdir, run_demo(CHAIN, workdir, progress=False)


def test_every_stage_writes_finite_outputs(chain):
  workdir, result = chain
  assert result["skipped"] == []
  r = {k: v["result"] for k, v in result["stages"].items()}
  assert set(r) == set(STAGES)
  for name in STAGES:
    assert read_done(os.path.join(workdir, name))["fingerprint"] == CHAIN.fingerprint(name)
  assert r["corpus"]["splits"] == {"train": 8, "validation": 8, "test": 2}
  for kind in ("audio", "video"):
    run = r[f"{kind}_codec"]
    assert run["steps"] == 2 and _finite(run["eval"])
    assert os.path.isdir(os.path.join(run["run_dir"], "checkpoints", "2"))
    with open(os.path.join(run["run_dir"], "eval.json")) as f:
      ev_json = json.load(f)
    assert _finite(ev_json)
    files = ev_json["sample_files"]  # reconstructed samples beside tb/, as files a user opens
    assert files and all(os.path.dirname(p) == os.path.join(run["run_dir"], "samples", "step_2") for p in files)
    if kind == "audio":
      assert {os.path.basename(p) for p in files} >= {"sample_0_reference.wav", "sample_0_reconstruction.wav"}
      for p in files:
        with wave.open(p) as w:
          assert w.getframerate() == 16000 and w.getnframes() > 1000
    else:  # the shape probe ran on the held-out split (its frames: those with a shape, maybe none)
      assert 0.0 <= run["eval"]["shape_colour_accuracy"] <= 1.0 and run["eval"]["shape_colour_frames"] >= 0
      for p in files:
        img = plt.imread(p)
        assert img.ndim == 3 and img.shape[0] == 2 * 16 * 8  # reference over reconstruction, 16 px frames x 8
  assert r["tokens"]["conversations"] == {"train": 8, "validation": 8, "test": 2}
  with open(os.path.join(r["tokens"]["token_dir"], "manifest.json")) as f:
    assert json.load(f)["config_name"] == "demo_tiny"
  # demo_tiny's text_in targets are the user's words as heard: every token example carries them
  train = TokenDataSource(r["tokens"]["token_dir"], "train")
  heard = [train[i]["heard_text"] for i in range(len(train))]
  assert any((h < 256).any() for h in heard)  # some user words were heard
  t = r["transformer"]
  assert t["steps"] == 3 and _finite(t["last_train"]) and _finite(t["validation"])
  assert np.isfinite(t["validation"]["loss"]) and t["validation"]["loss"] > 0
  assert np.isfinite(t["validation"]["loss/text_in"]) and t["validation"]["loss/text_in"] > 0
  # the demo's loss marks reached the batches and the loss (demo_tiny mirrors demo): some reply and stop
  # targets in the validation batches, no pause marks (pause_weight off)
  for mark in ("answer", "reply", "pause", "stop"):
    assert np.isfinite(t["validation"][f"loss/{mark}"]) and t["validation"][f"tokens/{mark}"] >= 0
  assert t["validation"]["tokens/reply"] + t["validation"]["tokens/stop"] > 0
  assert t["validation"]["tokens/pause"] == 0
  assert t["hearing"]["bytes"] > 0 and 0.0 <= t["hearing"]["byte_accuracy"] <= 1.0  # the hearing probe ran
  probed = [t["answers"][k] for k in ("colour", "arithmetic", "repeat")]  # so did the answer probe
  assert sum(p["answers"] for p in probed) > 0 and all(0.0 <= p["first_byte_accuracy"] <= 1.0 for p in probed)
  own = r["own_history"]  # fine-tuned from the transformer's weights on its own rollouts: what is evaluated
  assert own["steps"] == 2 and _finite(own["last_train"]) and _finite(own["validation"])
  for stage in (t, own):  # the closing table's "train loss first -> last" (a resumed stage's too: the file's)
    assert stage["first_train"]["step"] == 0 and np.isfinite(stage["first_train"]["loss"])
    assert stage["last_train"]["step"] == stage["steps"] - 1  # records count steps from 0
  assert os.path.isdir(os.path.join(own["run_dir"], "checkpoints", "2"))
  with open(os.path.join(own["run_dir"], "metrics.jsonl")) as f:
    fed = [json.loads(line) for line in f if "own_history/units" in line]
  assert fed and all(0.0 <= m["own_history/units"] <= 1.0 for m in fed)
  ev = r["evaluate"]
  assert os.path.exists(ev["report"]) and len(ev["timelines"]) == 2 * 3  # reference, codec, model rows
  assert all(os.path.getsize(p) > 1000 for p in ev["timelines"])
  assert set(ev["headline"]) == {"reference", "reference_codec", "model"}
  with open(ev["task_probe"]["file"]) as f:  # the task read-out, teacher-forced and on the model's own streams
    probe = json.load(f)
  assert probe["fit_events"] > 0
  for context in ("teacher_forced", "free_running"):
    assert probe[context]["events"] == probe["teacher_forced"]["events"] > 0
    assert 0.0 <= probe[context]["accuracy"] <= 1.0
    assert ev["task_probe"][context]["accuracy"] == probe[context]["accuracy"]
  assert "task read at the decision unit, free-running" in result["table"]
  s = r["stream"]
  assert s["units"] == 24 and np.isfinite(s["model_audio_rms"])
  with wave.open(s["files"]["wav"]) as w:
    assert w.getnchannels() == 2 and w.getnframes() == s["units"] * 2560
    pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
  assert np.isfinite(pcm.astype(np.float32)).all()
  assert os.path.getsize(s["files"]["mp4"]) > 1000
  assert "| transformer |" in result["table"] and "weak" in result["table"]
  assert s["files"]["mp4"] in result["table"]


def test_launch_evaluate_runs_the_task_probe_on_a_demo_workdir(chain, tmp_path):
  """`launch.evaluate --tokens` on the demo's own stage folders: the same task read-out as the evaluate
  stage's (same model, fit and test conversations, same draws); `--tokens` without a model is refused."""
  import subprocess
  import sys
  workdir, result = chain
  stage = result["stages"]["evaluate"]["result"]["task_probe"]
  d = {n: os.path.join(workdir, n) for n in STAGES}
  out = str(tmp_path / "eval")
  cmd = [sys.executable, "-m", "launch.evaluate", f"--checkpoint={d['own_history']}", f"--data_dir={d['corpus']}",
         "--corpus_size=tiny", f"--audio_codec={d['audio_codec']}", f"--video_codec={d['video_codec']}",
         f"--tokens={d['tokens']}", "--num=2", "--num_slots=2", "--recognizer=false", "--plots=false",
         "--media=false", f"--out_dir={out}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(out, "task_probe.json")) as f:
    probe = json.load(f)
  assert probe["fit_events"] > 0
  for context in ("teacher_forced", "free_running"):
    assert probe[context]["events"] == stage[context]["events"] > 0
    assert probe[context]["accuracy"] == pytest.approx(stage[context]["accuracy"]), context
  bad = subprocess.run([sys.executable, "-m", "launch.evaluate", "--config=configs/tiny.py", f"--tokens={d['tokens']}",
                        f"--out_dir={out}_bad"], capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "--tokens" in bad.stderr and "--checkpoint" in bad.stderr
  assert not os.path.exists(out + "_bad")  # refused before anything was built or written


def test_rerun_skips_every_finished_stage(chain):
  workdir, first = chain
  mtimes = {n: os.path.getmtime(os.path.join(workdir, n, "DONE.json")) for n in STAGES}
  again = run_demo(CHAIN, workdir, progress=False)
  assert again["skipped"] == list(STAGES)
  assert again["seconds"] < 20  # nothing trained, compiled or streamed
  assert {n: os.path.getmtime(os.path.join(workdir, n, "DONE.json")) for n in STAGES} == mtimes
  assert again["table"] == first["table"]


def test_a_finished_stage_of_another_plan_is_refused(chain):
  workdir, _ = chain
  other = dataclasses.replace(CHAIN, transformer_steps=4)
  with pytest.raises(ConfigError, match="transformer stage of another demo plan"):
    run_demo(other, workdir, progress=False)
  assert read_done(os.path.join(workdir, "transformer"))["fingerprint"] == CHAIN.fingerprint("transformer")


def test_a_model_change_keeps_the_corpus_codec_and_token_stages():
  """Only the Transformer and what reads it are redone when the model section changes."""
  for change in ({"model.depth_layers": 1}, {"train.own_stream_swap": 0.1}, {"train.own_stream_sampling": 0.2},
                 {"train.own_history": 0.3}, {"loss.answer_weight": 5.0},
                 {"loss.pause_weight": 2.0}, {"loss.stop_weight": 2.0}):
    other = dataclasses.replace(CHAIN, model_overrides={**CHAIN.model_overrides, **change})
    for stage in ("corpus", "audio_codec", "video_codec", "tokens"):  # Transformer-only training fields too
      assert other.fingerprint(stage) == CHAIN.fingerprint(stage), (change, stage)
    for stage in ("transformer", "evaluate", "stream"):
      assert other.fingerprint(stage) != CHAIN.fingerprint(stage), (change, stage)
  # the own-history fine-tune's schedule reaches it and what reads the model, not the trained Transformer;
  # without the stage the evaluation reads the Transformer
  for other in (dataclasses.replace(CHAIN, own_history=dataclasses.replace(CHAIN.own_history, rate=0.5)),
                dataclasses.replace(CHAIN, own_history=None)):
    assert other.fingerprint("transformer") == CHAIN.fingerprint("transformer")
    for stage in ("evaluate", "stream"):
      assert other.fingerprint(stage) != CHAIN.fingerprint(stage), (other.own_history, stage)
  assert CHAIN.model_stage() == "own_history" and dataclasses.replace(CHAIN, own_history=None).model_stage() == \
      "transformer"
  # a corpus setting (`plan.corpus_spec`) redoes every stage; an empty one is no setting at all
  causal = dataclasses.replace(CHAIN, corpus_spec={"word_by_word_replies": True})
  assert all(causal.fingerprint(st) != CHAIN.fingerprint(st) for st in ("corpus", "audio_codec", "tokens", "evaluate"))
  assert "spec" not in CHAIN.stage_inputs("corpus") and causal.stage_inputs("corpus")["spec"] == {"word_by_word_replies": True}
  # a codec schedule change does reach the codec and everything after it
  slower = dataclasses.replace(CHAIN, audio_codec=dataclasses.replace(CHAIN.audio_codec, learning_rate=1e-4))
  assert slower.fingerprint("corpus") == CHAIN.fingerprint("corpus")
  assert slower.fingerprint("audio_codec") != CHAIN.fingerprint("audio_codec")
  assert slower.fingerprint("tokens") != CHAIN.fingerprint("tokens")
  # a stage reads only its own codec: a new video vocabulary keeps the corpus and the audio codec,
  # and redoes the video codec and the tokens; so does a video loss weight
  for change in ({"model_overrides": {**CHAIN.model_overrides, "video.levels": (8, 8, 5, 5, 5)}},
                 {"video_codec": dataclasses.replace(CHAIN.video_codec, contrast_weight=3.0)}):
    v = dataclasses.replace(CHAIN, **change)
    for stage in ("corpus", "audio_codec"):
      assert v.fingerprint(stage) == CHAIN.fingerprint(stage), (change, stage)
    for stage in ("video_codec", "tokens", "transformer"):
      assert v.fingerprint(stage) != CHAIN.fingerprint(stage), (change, stage)
  # the corpus reads the frame size
  bigger = dataclasses.replace(CHAIN, model_overrides={**CHAIN.model_overrides, "video.height": 32,
                                                       "video.width": 32})
  assert bigger.fingerprint("corpus") != CHAIN.fingerprint("corpus")
