"""Runs the behaviour evaluation on held-out dialogues and writes what a person can check.

    report = evaluate(examples, cfg, out_dir)                          # reference row only
    report = evaluate(examples, cfg, out_dir, engine=engine, params=engine.params)   # + model row

Rows (all scored by the same code, `dialogue_score.score_dialogue`):
- `reference`: the corpus' own model streams played as the model (the ceiling,
  and a check of the metric code);
- `reference_codec` (with `audio_codec`): the same with its speech through the
  audio codec's round trip (what the codec alone costs the recogniser);
- `model`: the engine's free-running streams, the user's streams teacher-forced.

Writes `out_dir/report.json` (settings, per-row summaries, headline table, per
dialogue scores), `out_dir/timelines/<conversation_id>_<row>.png` and, per
dialogue and row, `out_dir/media/<conversation_id>_<row>_stereo.wav` (user left,
model right), `.mp4` (user | avatar, both voices) and `_streams.npz` (the model
streams that were scored).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from wan_streamer_jax.config import Config
from wan_streamer_jax.evaluation import plots, report, streams
from wan_streamer_jax.evaluation.dialogue_score import score_dialogue
from wan_streamer_jax.evaluation.settings import EvalSettings


def _batches(xs: list, size: int):
  for i in range(0, len(xs), size):
    yield xs[i:i + size]


def run_engine(engine, params, examples: list[dict], seeds: list[int]) -> dict:
  """The engine's outputs `[U, S, ...]` (numpy) for `examples` in its slots, via `run_stream`.

  The user's streams are teacher-forced (inputs), the model's free-running; `seeds[i]` is
  dialogue i's sampling seed (independent of the slot it lands in). The model's text is scored where
  it is spoken (`streams.speech_aligned_text`: `text.out_lead_units` later than it is emitted).
  """
  import jax
  from wan_streamer_jax.streaming import run_stream
  S = engine.num_slots
  if len(examples) > S:
    raise ValueError(f"run_engine: {len(examples)} dialogues do not fit the engine's {S} slots")
  inputs, active, reset = streams.engine_inputs(examples, num_slots=S, seeds=seeds)
  _, outputs = run_stream(engine, params, engine.init_state(seed=0), inputs, active_seq=active, reset_seq=reset)
  outputs = jax.tree.map(np.asarray, jax.device_get(outputs))
  return streams.speech_aligned_text(outputs, engine.cfg.text.out_lead_units)


def _drawn_out_tokens(engine, out: dict, group: list[dict]) -> dict:
  """The model's own out tokens in one engine run's outputs (`run_engine(engine, params, group, ...)`):
  conversation id -> out group -> int32 `[units, group_size]` (the tokens the engine drew *of* each unit
  and fed back as its next unit's out slots)."""
  from wan_streamer_jax import schedule
  sizes = [engine.layout.group_size(g) for g in schedule.OUT_GROUPS]
  own = {}
  for s, ex in enumerate(group):
    drawn = np.asarray(out["next_tokens"][:int(ex["num_units"]), s], np.int32)
    own[conversation_id(ex)] = dict(zip(schedule.OUT_GROUPS, np.split(drawn, np.cumsum(sizes)[:-1], axis=1)))
  return own


def codec_round_trip(audio_codec, audio: np.ndarray, bucket_units: int = 32) -> np.ndarray:
  """float32 `[samples]` through the audio codec's encode + decode (the offline call).

  The clip is zero-padded at its end to a multiple of `bucket_units` units (the codec is
  causal: the padding changes nothing before it), so dialogues of many lengths share a few
  compiled shapes.
  """
  bucket = audio_codec.cfg.samples_per_unit * bucket_units
  n = audio.shape[0]
  x = np.zeros((1, -(-n // bucket) * bucket), np.float32)
  x[0, :n] = audio
  y = audio_codec.decode(audio_codec.encode(x))
  return np.asarray(y, np.float32)[0, :n]


def score_row(examples: list[dict], outputs_of, sample_rate: int, settings: EvalSettings, judge,
              batch: int, desc: str | None = None) -> tuple[list[dict], list]:
  """Scores every dialogue; `outputs_of(batch_examples)` gives engine-format outputs. Returns (scores, streams).

  `desc`: show a tqdm bar (one step per batch of dialogues) with that name.
  """
  scores, model_streams = [], []
  groups = list(_batches(examples, batch))
  if desc:
    from tqdm import tqdm
    groups = tqdm(groups, desc=desc, unit="batch")
  for group in groups:
    outputs = outputs_of(group)
    for s, ex in enumerate(group):
      st = streams.streams_of(outputs, s, int(ex["num_units"]))
      model_streams.append(st)
      scores.append(score_dialogue(ex, st, sample_rate, settings, judge))
  return scores, model_streams


def evaluate(examples: list[dict], cfg: Config, out_dir: str, *, engine=None, params=None, audio_codec=None,
             settings: EvalSettings = EvalSettings(), seed: int = 0, plot: bool = True, media: bool = True,
             mp4: bool = True, progress: bool = False) -> dict:
  """Evaluates the rows (module docstring) on `examples` (corpus dicts); writes and returns the report.

  With an `engine` the returned dict (not the written report) also holds `own_out_tokens`: the model
  row's draws, conversation id -> out group -> int32 `[units, group_size]` (`_drawn_out_tokens`).
  """
  if not examples:
    raise ValueError("evaluate: expected at least one held-out dialogue")
  sr = cfg.audio.sample_rate
  judge = None
  if settings.use_recognizer:
    from wan_streamer_jax.evaluation.recognizer import SpeechJudge
    judge = SpeechJudge(sr)
  os.makedirs(out_dir, exist_ok=True)
  desc = (lambda name: name) if progress else (lambda name: None)  # noqa: E731
  rows: dict[str, tuple[list, list]] = {}
  own: dict = {}
  rows["reference"] = score_row(examples, lambda g: streams.reference_outputs(g), sr, settings, judge, 8,
                                desc("reference"))
  if audio_codec is not None:
    def coded(group):
      out = streams.reference_outputs(group)
      for s, ex in enumerate(group):
        n = int(ex["num_units"])
        out["audio"][:n, s] = codec_round_trip(audio_codec, out["audio"][:n, s].reshape(-1)).reshape(n, -1)
      return out
    rows["reference_codec"] = score_row(examples, coded, sr, settings, judge, 8, desc("reference_codec"))
  if engine is not None:
    params = engine.params if params is None else params
    index = {id(ex): i for i, ex in enumerate(examples)}

    def model_outputs(group):
      out = run_engine(engine, params, group, [seed * 100_003 + index[id(ex)] for ex in group])
      own.update(_drawn_out_tokens(engine, out, group))
      return out
    rows["model"] = score_row(examples, model_outputs, sr, settings, judge, engine.num_slots,
                              desc("model (streaming engine)"))
  summaries = {name: report.summarise_row(scores) for name, (scores, _) in rows.items()}
  result = {
      "settings": dataclasses.asdict(settings), "sample_rate": sr, "config": cfg.name,
      "dialogues": [str(s["conversation_id"]) for s in rows["reference"][0]],
      "summary": summaries,
      "headline": {name: report.headline(s) for name, s in summaries.items()},
      "moshi_full_duplex_bench": report.MOSHI_FULL_DUPLEX_BENCH,
      "scores": {name: scores for name, (scores, _) in rows.items()},
  }
  result["table"] = report.markdown_table(result["headline"])
  if "model" in summaries:
    result["targets"] = report.targets(summaries["model"], summaries["reference"])
  files = {"report": os.path.join(out_dir, "report.json"), "timelines": []}
  if plot:
    os.makedirs(os.path.join(out_dir, "timelines"), exist_ok=True)
    for name, (_, sts) in rows.items():
      for ex, st in zip(examples, sts):
        path = os.path.join(out_dir, "timelines", f"{conversation_id(ex)}_{name}.png")
        plots.timeline_figure(ex, st, sr, settings, title=f"{conversation_id(ex)} [{name}]").savefig(path, dpi=90)
        plots.close_all()
        files["timelines"].append(path)
  if media:
    files["media"] = write_media(examples, {name: sts for name, (_, sts) in rows.items()},
                                 os.path.join(out_dir, "media"), sr, mp4=mp4)
  result["files"] = files
  with open(files["report"], "w") as f:
    json.dump(result, f, indent=1, default=_json_default)
  if engine is not None:
    result["own_out_tokens"] = own
  return result


def write_media(examples: list[dict], rows: dict[str, list], media_dir: str, sample_rate: int,
                mp4: bool = True) -> list[str]:
  """Per dialogue and row: the stereo WAV (user left, model right), the side-by-side MP4 with both
  voices (the streaming export's writers) and the model streams as `.npz`. Returns the paths."""
  from data_pipelines import media_io
  from wan_streamer_jax.streaming import outputs as writers
  os.makedirs(media_dir, exist_ok=True)
  paths = []
  for name, sts in rows.items():
    for ex, st in zip(examples, sts):
      base = os.path.join(media_dir, f"{conversation_id(ex)}_{name}")
      writers.write_stereo_wav(base + "_stereo.wav", np.asarray(ex["user_audio"], np.float32), st.audio,
                               sample_rate)
      np.savez_compressed(base + "_streams.npz", **dataclasses.asdict(st))
      paths += [base + "_stereo.wav", base + "_streams.npz"]
      if mp4 and media_io.have_ffmpeg():
        writers.write_side_by_side_mp4(base + ".mp4", np.asarray(ex["user_video"]),
                                       np.asarray(ex["user_camera_on"], bool), st.video, base + "_stereo.wav")
        paths.append(base + ".mp4")
  return paths


def conversation_id(ex: dict) -> str:
  """A corpus example's conversation id as str."""
  cid = ex["conversation_id"]
  return cid.decode() if isinstance(cid, bytes) else str(cid)


def _json_default(x):
  if isinstance(x, (np.integer, np.floating, np.bool_)):
    return x.item()
  raise TypeError(f"not JSON serialisable: {type(x)}")


def held_out_dialogues(cfg: Config, *, split: str = "test", num: int = 16, start: int = 0,
                       data_dir: str | None = None, corpus_size: str = "small", seed: int = 0,
                       **spec_overrides) -> list[dict]:
  """Held-out corpus dialogues: read from a built corpus at `data_dir`, else generated (the same bytes);
  `spec_overrides`: `CorpusSpec` fields of that corpus (e.g. `word_by_word_replies=True`)."""
  if split == "train":
    raise ValueError("held_out_dialogues: split must be a held-out split (validation | test), got 'train'")
  return corpus_dialogues(cfg, split=split, num=num, start=start, data_dir=data_dir, corpus_size=corpus_size,
                          seed=seed, **spec_overrides)


def corpus_dialogues(cfg: Config, *, split: str, num: int, start: int = 0, data_dir: str | None = None,
                     corpus_size: str = "small", seed: int = 0, **spec_overrides) -> list[dict]:
  """Dialogues `start .. start + num` of a corpus split (train too: the task probe's fit set), as
  `held_out_dialogues` reads them."""
  if data_dir:
    from data_pipelines.synthetic_builder import make_synthetic_builder
    builder = make_synthetic_builder(cfg, corpus_size, data_dir=os.path.expanduser(data_dir), seed=seed,
                                     **spec_overrides)
    if not builder.is_prepared():
      raise ValueError(f"held_out_dialogues: no prepared corpus at {builder.data_dir} "
                       "(build it with launch.make_dataset, or leave data_dir unset to generate)")
    source = builder.as_data_source(split)
    return [source[i] for i in range(start, min(len(source), start + num))]
  from data_pipelines.corpus import CorpusSpec, generate_conversation
  spec = CorpusSpec.from_config(cfg, seed=seed, **spec_overrides)
  return [generate_conversation(spec, split, i) for i in range(start, start + num)]
