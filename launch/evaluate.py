"""Behaviour evaluation (Full-Duplex-Bench style) on held-out dialogues: JSON report + timeline PNGs.

    python -m launch.evaluate --config=configs/small.py --num=32 --out_dir=/tmp/wan_eval           # reference row
    python -m launch.evaluate --config=configs/tiny.py --model=random --num=4 --out_dir=/tmp/wan_eval  # + random init
    python -m launch.evaluate --config=configs/small.py --audio_codec=/tmp/codec_runs/audio ...     # + codec round trip
    python -m launch.evaluate --config=configs/small.py --checkpoint=/tmp/wan_run \
        --audio_codec=/tmp/codec_runs/audio --video_codec=/tmp/codec_runs/video --num=100      # a trained model
    python -m launch.evaluate --checkpoint=/tmp/wan_demo/own_history --data_dir=/tmp/wan_demo/corpus \
        --corpus_size=small --audio_codec=/tmp/wan_demo/audio_codec --video_codec=/tmp/wan_demo/video_codec \
        --tokens=/tmp/wan_demo/tokens --num=32                                # + the task probe (demo workdir)

Rows: `reference` (the corpus' model streams played as the model: the ceiling),
`reference_codec` (its speech through `--audio_codec`), `model` (the streaming
engine, free-running, the user teacher-forced). Prints the headline table and
writes `out_dir/report.json`, `out_dir/timelines/*.png`, `out_dir/media/*` (stereo
WAV: user left, model right; MP4: user | avatar with both voices). With `--tokens` (the
corpus' token shards, `launch.tokenize`) also `out_dir/task_probe.json`: the model row's
task read-out (`evaluation/task_probe.py`), teacher-forced and on its own drawn streams.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from wan_streamer_jax.config import Config
from wan_streamer_jax.evaluation import runner, task_probe
from wan_streamer_jax.evaluation.settings import EvalSettings
from wan_streamer_jax.streaming.sampling import SamplingConfig

_CONFIG = config_flags.DEFINE_config_file("config", "configs/small.py", "Model config (with --checkpoint: "
                                          "default the run's own).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir of a built corpus (default: generate).")
_SIZE = flags.DEFINE_enum("corpus_size", "small", ["tiny", "small", "full"], "Corpus size to read, if built.")
_SPLIT = flags.DEFINE_enum("split", "test", ["validation", "test"], "Held-out split.")
_NUM = flags.DEFINE_integer("num", 16, "Dialogues to evaluate.")
_START = flags.DEFINE_integer("start", 0, "First dialogue index.")
_SEED = flags.DEFINE_integer("seed", 0, "Corpus seed (and the engine's sampling seed).")
_WORDS = flags.DEFINE_bool("word_by_word_replies", False, "The corpus was built with word-by-word replies "
                           "(`CorpusSpec.word_by_word_replies`; launch.demo/make_dataset --word_by_word_replies).")
_OUT = flags.DEFINE_string("out_dir", "/tmp/wan_eval", "Output folder.")
_MODEL = flags.DEFINE_enum("model", "none", ["none", "random"], "Without --checkpoint: no model row, or a "
                           "random-init model of --config through the streaming engine.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "launch.train --workdir: the model row's weights.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_VIDEO_CODEC = flags.DEFINE_string("video_codec", None, "Trained video codec run dir (the model row's avatar).")
_SLOTS = flags.DEFINE_integer("num_slots", 4, "Engine session slots (dialogues streamed side by side).")
_AUDIO_CODEC = flags.DEFINE_string("audio_codec", None, "Trained audio codec run dir (the model row's voice; "
                                   "adds the reference_codec row).")
_SAMPLING = SamplingConfig()  # the engine's defaults
_TEMPERATURE = flags.DEFINE_float("temperature", _SAMPLING.temperature,
                                  "Model row: audio/video sampling temperature (0 = greedy).")
_TOP_K = flags.DEFINE_integer("top_k", _SAMPLING.top_k, "Model row: audio/video top-k (0 = all codes).")
_TEXT_TEMPERATURE = flags.DEFINE_float("text_temperature", _SAMPLING.text_temperature,
                                       "Model row: text sampling temperature (0 = greedy).")
_TEXT_TOP_K = flags.DEFINE_integer("text_top_k", _SAMPLING.text_top_k, "Model row: text top-k (0 = all tokens).")
_RECOGNISER = flags.DEFINE_bool("recognizer", True, "Judge the speech with pocketsphinx.")
_PLOTS = flags.DEFINE_bool("plots", True, "Write a timeline PNG per dialogue and row.")
_MEDIA = flags.DEFINE_bool("media", True, "Write the stereo WAV, side-by-side MP4 and streams per dialogue and row.")
_TOKENS = flags.DEFINE_string("tokens", None, "Token shards of the corpus (launch.tokenize --out_dir): adds the "
                              "model row's task probe (needs --checkpoint or --model=random).")
_PROBE_FIT = flags.DEFINE_integer("probe_fit", task_probe.FIT_CONVERSATIONS,
                                  "Train-split conversations the task probe's read-out is fitted on.")


def _check_flags():
  """Flag combinations that cannot work, refused before anything is built or compiled."""
  has_model = bool(_CHECKPOINT.value) or _MODEL.value == "random"
  if _TOKENS.value is not None:
    if not has_model:
      raise ValueError("--tokens: the task probe reads the model row; expected --checkpoint or --model=random")
    if not os.path.isdir(os.path.join(_TOKENS.value, "train")) or not os.path.isdir(
        os.path.join(_TOKENS.value, _SPLIT.value)):
      raise ValueError(f"--tokens: expected launch.tokenize's output folder with train/ and {_SPLIT.value}/ "
                       f"shards, got {_TOKENS.value!r}")
  if _PROBE_FIT.value < 1:
    raise ValueError(f"--probe_fit: expected an int >= 1, got {_PROBE_FIT.value}")


def main(argv):
  del argv
  _check_flags()
  cfg = Config.from_dict(_CONFIG.value)
  if _CHECKPOINT.value and not flags.FLAGS["config"].present:  # the run's own config
    from wan_streamer_jax.export.checkpoints import load_run_config
    cfg = load_run_config(_CHECKPOINT.value, _STEP.value)
  examples = runner.held_out_dialogues(cfg, split=_SPLIT.value, num=_NUM.value, start=_START.value,
                                       data_dir=_DATA_DIR.value, corpus_size=_SIZE.value, seed=_SEED.value,
                                       word_by_word_replies=_WORDS.value)
  audio_codec = None
  if _AUDIO_CODEC.value:
    from wan_streamer_jax.codecs.training import load_codec
    audio_codec, kind, _ = load_codec(_AUDIO_CODEC.value)
    if kind != "audio":
      raise ValueError(f"--audio_codec: expected an audio codec run, {_AUDIO_CODEC.value} holds a {kind} codec")
  engine = None
  if _CHECKPOINT.value or _MODEL.value == "random":
    from wan_streamer_jax.export.checkpoints import load_engine
    engine, info = load_engine(_CHECKPOINT.value, cfg=cfg, step=_STEP.value, audio_codec=_AUDIO_CODEC.value,
                               video_codec=_VIDEO_CODEC.value, num_slots=_SLOTS.value, seed=_SEED.value,
                               sampling={"temperature": _TEMPERATURE.value, "top_k": _TOP_K.value,
                                         "text_temperature": _TEXT_TEMPERATURE.value,
                                         "text_top_k": _TEXT_TOP_K.value},
                               max_units=max(int(ex["num_units"]) for ex in examples))
    print(f"model row: {info}")
  result = runner.evaluate(examples, cfg, _OUT.value, engine=engine, audio_codec=audio_codec,
                           settings=EvalSettings(use_recognizer=_RECOGNISER.value), seed=_SEED.value,
                           plot=_PLOTS.value, media=_MEDIA.value, progress=True)
  print(result["table"])
  if result.get("targets"):
    from wan_streamer_jax.evaluation.report import targets_table
    print("\n" + targets_table(result["targets"]))
  if _TOKENS.value is not None:
    fit = runner.corpus_dialogues(cfg, split="train", num=_PROBE_FIT.value, data_dir=_DATA_DIR.value,
                                  corpus_size=_SIZE.value, seed=_SEED.value, word_by_word_replies=_WORDS.value)
    probe = task_probe.model_task_knowledge(engine.model(), _TOKENS.value, fit, examples,
                                            result["own_out_tokens"], eval_split=_SPLIT.value)
    path = os.path.join(_OUT.value, "task_probe.json")
    with open(path, "w") as f:
      json.dump(probe, f, indent=1)
    print(f"\ntask probe ({path}): {json.dumps(task_probe.probe_headline(probe))}")
  files = result["files"]
  print(f"report: {files['report']}  timelines: {len(files['timelines'])} PNGs  media: {len(files.get('media', []))} "
        f"files under {_OUT.value}/media")


def run():
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
