"""What a demo run does at each stage: the `DemoPlan` (sizes, steps) and its two presets.

    plan = QUICK          # python -m launch.demo --quick: the whole chain in minutes, weak figures
    plan = DOCUMENTED     # python -m launch.demo: the documented run (1 h 54 min - 2 h 16 min on 2 idle CPU cores)

A plan names a shipped model config (`configs/demo.py`, `configs/demo_tiny.py`)
and the schedule of every stage. The codec run configs are the model config's
codec sections plus the codec schedules here (`codec_run_config`), so the
tokens always fit the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from wan_streamer_jax.config import Config, ConfigError, load_config


@dataclasses.dataclass(frozen=True)
class CodecRun:
  """One codec's training schedule (`config.train` / `config.optimizer` / `config.codec_train` fields)."""

  num_steps: int
  batch_size: int = 16
  units_per_example: int = 6
  learning_rate: float = 1e-3
  log_every: int = 50
  checkpoint_every: int = 500
  eval_windows: int = 64
  contrast_weight: float = 0.0  # video: `codec_train.contrast_weight`


@dataclasses.dataclass(frozen=True)
class OwnHistoryRun:
  """The `own_history` stage: the trained Transformer fine-tuned on its own free-running streams
  (`train.own_history`, `train/own_history.py`): weights from the `transformer` stage, a fresh
  optimizer, `num_steps` steps warming up to `learning_rate` and decaying over the run, the data
  drawn with `train.seed + 1` (other windows than the first steps of the main run)."""

  num_steps: int
  rate: float = 0.5  # `train.own_history`: the share of rows fed their rollout
  learning_rate: float = 5e-4
  warmup_steps: int = 50


@dataclasses.dataclass(frozen=True)
class DemoPlan:
  """Every knob of a demo run; `fingerprint(stage)` changes when anything that stage reads changes."""

  name: str
  config: str  # shipped model config name
  corpus_size: str  # tiny | small | full (the corpus' TFDS name)
  corpus_counts: dict  # conversations per split (overrides the size's)
  audio_codec: CodecRun
  video_codec: CodecRun
  transformer_steps: int
  eval_dialogues: int  # held-out test dialogues evaluated
  eval_slots: int = 4  # engine slots (dialogues streamed side by side) in the evaluation
  recognizer: bool = True  # judge the model's speech with pocketsphinx
  eval_mp4: bool = True  # a side-by-side MP4 per evaluated dialogue and row (stereo WAVs always)
  stream_split: str = "test"
  stream_index: int = 0
  stream_max_units: int | None = None  # stream only the dialogue's first units (None: all of it)
  weak: bool = False  # the figures are not meant to show learning (quick runs)
  model_overrides: dict = dataclasses.field(default_factory=dict)  # dotted config overrides
  own_history: OwnHistoryRun | None = None  # None: no `own_history` stage (the Transformer as trained)
  corpus_spec: dict = dataclasses.field(default_factory=dict)  # `CorpusSpec` overrides, e.g. word_by_word_replies

  def model_config(self) -> Config:
    cfg = load_config(self.config, dict(self.model_overrides))
    n = self.transformer_steps  # the learning rate decays over the stage's steps
    return cfg.replace(train={"num_steps": n}, optimizer={"decay_steps": n})

  def own_history_config(self) -> Config:
    """The `own_history` stage's run config (the model config with its schedule)."""
    run, cfg = self.own_history, self.model_config()
    if run is None:
      raise ConfigError(f"plan {self.name!r} has no own_history stage")
    return cfg.replace(
        train={"num_steps": run.num_steps, "own_history": run.rate, "own_stream_sampling": 0.0,
               "seed": cfg.train.seed + 1, "eval_every": max(1, run.num_steps // 2),
               "checkpoint_every": max(1, run.num_steps // 4)},
        optimizer={"learning_rate": run.learning_rate, "warmup_steps": run.warmup_steps,
                   "decay_steps": run.num_steps})

  def model_stage(self) -> str:
    """The stage whose Transformer the evaluation and the stream run."""
    return "transformer" if self.own_history is None else "own_history"

  def codec_run_config(self, kind: str) -> Config:
    """The model config's codec, trained with this plan's `kind` schedule."""
    run = self.audio_codec if kind == "audio" else self.video_codec
    base = self.model_config()
    return base.replace(
        name=f"{base.name}_codec_{kind}", codec_train={"kind": kind, "eval_windows": run.eval_windows,
                                                    "contrast_weight": run.contrast_weight},
        optimizer={"learning_rate": run.learning_rate, "warmup_steps": max(1, min(100, run.num_steps // 20)),
                   "decay_steps": run.num_steps, "end_lr_fraction": 0.05, "b1": 0.9, "b2": 0.99,
                   "weight_decay": 0.0, "grad_clip_norm": 100.0},
        train={"batch_size": run.batch_size, "units_per_example": run.units_per_example,
               "num_steps": run.num_steps, "log_every": run.log_every, "eval_every": 0,
               "checkpoint_every": run.checkpoint_every, "checkpoints_to_keep": 2})

  def stage_inputs(self, stage: str) -> dict:
    """What `stage` reads (JSON-able): its config and everything upstream of it."""
    cfg = self.model_config()
    # what the corpus reads of the config (`CorpusSpec.from_config`): frame size, sample rate, text slots
    corpus = {"config": {"video": {"height": cfg.video.height, "width": cfg.video.width},
                         "audio": {"sample_rate": cfg.audio.sample_rate}, "text": {"text_slots": cfg.text.text_slots}},
              "size": self.corpus_size, "counts": self.corpus_counts, "version": _corpus_version()}
    if self.corpus_spec:  # (absent when empty: a plan without overrides reads no spec)
      corpus["spec"] = dict(self.corpus_spec)
    # a codec stage reads its own codec's section and its schedule: changing the Transformer or the
    # other codec keeps it (and so does a Transformer-only training field: codecs never read it)
    def codec(kind):
      d = {k: v for k, v in self.codec_run_config(kind).to_dict().items()
           if k in (kind, "codec_train", "optimizer", "train", "mesh", "name")}
      d["train"] = {k: v for k, v in d["train"].items() if k not in TRANSFORMER_ONLY_TRAIN_FIELDS}
      return d
    audio = {"corpus": corpus, "config": codec("audio")}
    video = {"corpus": corpus, "config": codec("video")}
    tokens = {"corpus": corpus, "audio": audio, "video": video}
    model = {"tokens": tokens, "config": self.model_config().to_dict()}
    own = None if self.own_history is None else {"model": model, "config": self.own_history_config().to_dict()}
    final = model if own is None else own
    evaluation = {"model": final, "dialogues": self.eval_dialogues, "slots": self.eval_slots,
                  "recognizer": self.recognizer, "mp4": self.eval_mp4}
    stream = {"model": final, "split": self.stream_split, "index": self.stream_index,
              "max_units": self.stream_max_units}
    return {"corpus": corpus, "audio_codec": audio, "video_codec": video, "tokens": tokens,
            "transformer": model, "own_history": own, "evaluate": evaluation, "stream": stream}[stage]

  def fingerprint(self, stage: str) -> str:
    text = json.dumps(self.stage_inputs(stage), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _corpus_version() -> str:
  """The synthetic builder's version: a corpus written by other corpus code is another corpus."""
  from data_pipelines.synthetic_builder import SyntheticDialogues
  return str(SyntheticDialogues.VERSION)


# Fields of `TrainConfig` only the Transformer's training reads (not a codec stage's input).
TRANSFORMER_ONLY_TRAIN_FIELDS = ("own_stream_swap", "own_stream_sampling", "own_history")

# --quick: <= 10 minutes on 2 cores. Enough steps for every stage to run its real code and write
# every output; far too few to learn the task (its table says so).
QUICK = DemoPlan(
    name="quick", config="demo_tiny", corpus_size="tiny",
    corpus_counts={"train": 48, "validation": 4, "test": 4},
    audio_codec=CodecRun(num_steps=60, batch_size=8, units_per_example=4, learning_rate=2e-3, log_every=10,
                         checkpoint_every=30, eval_windows=8),
    video_codec=CodecRun(num_steps=60, batch_size=8, units_per_example=4, learning_rate=2e-3, log_every=10,
                         checkpoint_every=30, eval_windows=8, contrast_weight=12.0),
    transformer_steps=150, eval_dialogues=4, eval_slots=4, eval_mp4=False, weak=True,
    own_history=OwnHistoryRun(num_steps=20, rate=0.5, warmup_steps=5))

# The documented run (1 h 54 min from stage times measured alone; 2 h 16 min uninterrupted on a slower
# machine, run 15; 13-14 min of it the own_history stage; see the
# README's "The demo" for the measured stage times this schedule is planned from).
DOCUMENTED = DemoPlan(
    name="documented", config="demo", corpus_size="small",
    corpus_counts={"train": 1000, "validation": 50, "test": 50},
    audio_codec=CodecRun(num_steps=4000, batch_size=16, units_per_example=6, learning_rate=1e-3,
                         checkpoint_every=500),
    video_codec=CodecRun(num_steps=1200, batch_size=8, units_per_example=6, learning_rate=2e-3,
                         checkpoint_every=300, contrast_weight=12.0),
    transformer_steps=3000,  # run 13: 2300 (the 2-hour bound) lost the pause and turn targets on validation
    eval_dialogues=50, eval_slots=8,  # every test dialogue (runs 1-10: the first 32)
    # run 14: run 8 + 400 steps on its own rollouts in a quarter of the rows (the 2-hour bound; run 12:
    # 800 steps, chosen on the validation split over 800 plain steps, half the rows (run 11) and every
    # row for 400 steps; 400 steps held both turn targets on validation: README "Run 14")
    own_history=OwnHistoryRun(num_steps=400, rate=0.25))

PLANS = {"quick": QUICK, "documented": DOCUMENTED}
