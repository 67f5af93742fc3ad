"""One synthetic conversation, deterministic from `(seed, split, index)`.

`generate_conversation(spec, split, index)` returns a dict of numpy arrays
(the TFDS builder writes exactly this):

  user_audio      float32 [units * samples_per_unit] in [-1, 1]
  user_video      uint8   [units * 4, H, W, 3]  (25 fps; black where the camera is off)
  user_camera_on  bool    [units]   (False -> the video_in stream is MISSING)
  user_text       int32   [units, text_slots]  (typed text; all MISSING when the user has no text box)
  model_audio     float32 [units * samples_per_unit]
  model_video     uint8   [units * 4, H, W, 3]  (the avatar; mouth follows model_audio)
  model_text      int32   [units, text_slots]  (inner monologue: the model's words at their units)
  num_units       int32
  task            str     main task; expected_answer str ("" if none); answer_unit int32 (-1 if none)
  conversation_id str;    metadata str (JSON: turns, timing, scene, every answer)
"""

from __future__ import annotations

import dataclasses
import json
import zlib

import numpy as np

from data_pipelines import avatar, dialogues, scenes, speech, text_slots, voices
from data_pipelines.timeline import Timeline, answer_word_starts
from wan_streamer_jax.config import FRAMES_PER_UNIT, Config

SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
  """What a conversation looks like: sizes from the model config, plus generation knobs."""

  height: int = 16
  width: int = 16
  sample_rate: int = 16000
  text_slots: int = 4
  seed: int = 0
  max_tasks: int = 3
  camera_off_prob: float = 0.15  # the whole conversation without camera
  camera_drop_prob: float = 0.15  # the camera goes off for a while (conversations without a colour task)
  user_text_prob: float = 0.3  # the user has a text box (typed questions may appear)
  distractor_shape_prob: float = 0.2  # a shape is shown with nobody asking about it
  noise_level: float = 0.003  # user microphone noise (std)
  # Units from the unit in which the user stops to the model's first reply unit, drawn uniformly
  # from [lo, hi]. 2 (0.16-0.32 s after the user's last sample, 0.24 s on average; Moshi answers in
  # 0.265 s on Full-Duplex-Bench): the shortest onset at which the model has heard one whole unit of
  # silence before its reply's first unit is due (it emits unit t+1 after hearing unit t; at 1 it
  # would have to commit inside the user's last unit), and a fixed one, so the start of a reply is a
  # target the model can learn exactly instead of a 1-in-4 guess (the old 1..4 draw).
  reply_onset_units: tuple[int, int] = (2, 2)
  # Who the user is: "classic" (one of `speech.USER_VOICES`, fixed rate/pitch) or a voice pool of
  # `data_pipelines.voices` ("train" | "validation" | "test": an accent + variant of that pool with a
  # random rate, pitch and pitch range per utterance). The model keeps `speech.MODEL_VOICE`.
  user_voices: str = "classic"
  # The model's speech said one word at a time (`SpeechSynthesizer.say_in_parts` of its words): off,
  # eSpeak's sentence-level intonation and peak normalisation make the voice of a word depend on the
  # words after it (the answer, the reply's template), which a causal speaker cannot do and teacher
  # forcing learns to read (docs/design.md "Word-by-word replies").
  word_by_word_replies: bool = False

  def __post_init__(self):
    lo, hi = self.reply_onset_units
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
      raise ValueError(f"CorpusSpec.reply_onset_units: expected (lo, hi) ints with 1 <= lo <= hi, "
                       f"got {self.reply_onset_units!r}")
    if self.user_voices not in ("classic",) + voices.POOLS:
      raise ValueError(f"CorpusSpec.user_voices: expected classic|{'|'.join(voices.POOLS)}, "
                       f"got {self.user_voices!r}")

  @classmethod
  def from_config(cls, cfg: Config, **overrides) -> "CorpusSpec":
    return cls(height=cfg.video.height, width=cfg.video.width, sample_rate=cfg.audio.sample_rate,
               text_slots=cfg.text.text_slots, **overrides)

  @property
  def samples_per_unit(self) -> int:
    return int(round(self.sample_rate * 0.16))

  @property
  def samples_per_frame(self) -> int:
    return self.samples_per_unit // FRAMES_PER_UNIT


def _rng(spec: CorpusSpec, split: str, index: int) -> np.random.Generator:
  code = SPLIT_CODES.get(split, zlib.crc32(split.encode()))
  return np.random.default_rng(np.random.SeedSequence([spec.seed, code, index]))


def generate_conversation(spec: CorpusSpec, split: str, index: int,
                          synth: speech.SpeechSynthesizer | None = None) -> dict:
  """Generates conversation `index` of `split`; a pure function of `(spec, split, index)`."""
  synth = synth or speech.get_synthesizer(spec.sample_rate)
  rng = _rng(spec, split, index)
  spu, spf = spec.samples_per_unit, spec.samples_per_frame
  user_voice = speech.USER_VOICES[int(rng.integers(len(speech.USER_VOICES)))]
  voice_meta = dataclasses.asdict(user_voice)
  if spec.user_voices != "classic":  # same dialogue as the classic corpus, another speaker
    code = SPLIT_CODES.get(split, zlib.crc32(split.encode()))
    speaker = voices.Speaker.sample(np.random.default_rng(np.random.SeedSequence(
        [spec.seed, code, index, zlib.crc32(spec.user_voices.encode())])), spec.user_voices)
    user_voice, voice_meta = speaker, {**speaker.describe(), "pool": spec.user_voices}
  tasks = dialogues.sample_tasks(rng, spec.max_tasks)
  camera_mode = "off" if rng.random() < spec.camera_off_prob else "on"
  ctx = dialogues.SceneContext(camera_on=camera_mode == "on",
                               shape_colour=list(scenes.SHAPE_COLOURS)[int(rng.integers(len(scenes.SHAPE_COLOURS)))],
                               shape_kind=scenes.SHAPE_KINDS[int(rng.integers(len(scenes.SHAPE_KINDS)))])
  has_text_box = rng.random() < spec.user_text_prob
  tl = Timeline(synth, rng, spu, user_voice, speech.MODEL_VOICE, spec.text_slots,
                reply_onset=spec.reply_onset_units, word_by_word_replies=spec.word_by_word_replies)
  tl.silence(int(rng.integers(0, 3)))
  records = []
  for task in tasks:
    kwargs = {} if task != "arithmetic" else {"typed_prob": 0.4 if has_text_box else 0.0}
    records.append(dialogues.TASK_FNS[task](tl, ctx, **kwargs))
  num_units = tl.unit_of(tl.end) + 1 + int(rng.integers(2, 7))
  n_samples, n_frames = num_units * spu, num_units * FRAMES_PER_UNIT

  # Audio.
  user_gain = float(rng.uniform(0.5, 1.0))
  user_audio = tl.mix("user", n_samples) * user_gain
  user_audio += rng.normal(0.0, spec.noise_level, n_samples).astype(np.float32)
  user_audio = np.clip(user_audio, -1.0, 1.0).astype(np.float32)
  model_audio = np.clip(tl.mix("model", n_samples), -1.0, 1.0).astype(np.float32)

  # Camera and shapes (per frame / per unit).
  camera_units = np.full(num_units, ctx.camera_on)
  if ctx.camera_on and "colour" not in tasks and rng.random() < spec.camera_drop_prob:
    a = int(rng.integers(0, max(1, num_units - 8)))
    camera_units[a:a + int(rng.integers(5, 25))] = False
    camera_mode = "drops"
  shape_frames = np.zeros(n_frames, bool)
  spans = list(ctx.shape_spans)
  if not spans and rng.random() < spec.distractor_shape_prob:
    a = int(rng.integers(0, n_samples))
    spans.append((a, a + int(rng.integers(10, 40)) * spu))
  for a, b in spans:
    shape_frames[a // spf: -(-b // spf)] = True

  # Video.
  style = scenes.SceneStyle.sample(rng)
  user_mouth = avatar.mouth_opening(speech.frame_envelope(user_audio * (1.0 / user_gain), spf)[:n_frames])
  user_video = scenes.render_user_video(style, user_mouth, shape_frames, ctx.shape_colour, ctx.shape_kind,
                                        np.repeat(camera_units, FRAMES_PER_UNIT), spec.height, spec.width)
  model_env = speech.frame_envelope(model_audio, spf)[:n_frames]
  model_video = avatar.render_avatar(avatar.mouth_opening(model_env), avatar.blink_schedule(rng, n_frames),
                                     spec.height, spec.width)

  # Text.
  model_events = []
  for t in tl.turns:
    if t.speaker != "model":
      continue
    model_events += [text_slots.word_event(tl.unit_of(s), w) for w, s, _ in t.spoken_words()]
    model_events.append(text_slots.end_of_turn_event(tl.last_unit(t.end)))
  model_text, _ = text_slots.layout_text(model_events, num_units, spec.text_slots)
  if has_text_box:
    user_events = []
    for t in tl.turns:
      if t.kind == "typed":
        user_events += [text_slots.word_event(u, w) for w, u in zip(t.text.split(), t.typed_units)]
        user_events.append(text_slots.end_of_turn_event(tl.last_unit(t.end)))
    user_text, _ = text_slots.layout_text(user_events, num_units, spec.text_slots)
  else:
    user_text = text_slots.missing_text(num_units, spec.text_slots)

  # Metadata.
  turns_meta = []
  for t in tl.turns:
    words = t.spoken_words()
    turns_meta.append({
        "speaker": t.speaker, "kind": t.kind, "task": t.task, "text": t.text,
        "start_sample": t.start, "end_sample": t.end,
        "start_unit": tl.unit_of(t.start), "end_unit": tl.last_unit(t.end),
        "interrupted": t.interrupted, "onset_units": t.onset_units, "answer": t.answer,
        "words": [[w, tl.unit_of(s), tl.last_unit(e)] for w, s, e in words] if words else
                 [[w, u, u] for w, u in zip(t.text.split(), t.typed_units)],
    })
  answers = []
  for rec in records:
    if "answer" in rec:
      turn = rec["turn"]
      first = _answer_start_unit(tl, turn, rec["answer"])
      answers.append({"task": rec["task"], "answer": rec["answer"], "start_unit": first,
                      "turn_start_unit": tl.unit_of(turn.start), "turn_end_unit": tl.last_unit(turn.end)})
  task_records = [{k: v for k, v in r.items() if k != "turn"} for r in records]
  meta = {
      "tasks": task_records, "answers": answers, "turns": turns_meta, "camera": camera_mode,
      "shape": {"colour": ctx.shape_colour, "kind": ctx.shape_kind,
                "spans_units": [[a // spu, (b - 1) // spu] for a, b in spans]},
      "user_voice": voice_meta, "user_text_box": has_text_box,
      "samples_per_unit": spu, "sample_rate": spec.sample_rate, "seed": spec.seed, "split": split,
      "index": index,
  }
  first_answer = answers[0] if answers else None
  return {
      "user_audio": user_audio, "user_video": user_video, "user_camera_on": camera_units.astype(bool),
      "user_text": user_text, "model_audio": model_audio, "model_video": model_video,
      "model_text": model_text, "num_units": np.int32(num_units),
      "task": "+".join(tasks),
      "expected_answer": first_answer["answer"] if first_answer else "",
      "answer_unit": np.int32(first_answer["start_unit"] if first_answer else -1),
      "conversation_id": f"{split}-{spec.seed}-{index:07d}",
      "metadata": json.dumps(meta, sort_keys=True),
  }


def _answer_start_unit(tl: Timeline, turn, answer: str) -> int:
  """Unit where the first word of `answer` starts being spoken inside `turn` (-1 if it is not said);
  its last place in the turn (`timeline.answer_word_starts`): "one times one is one." answers at
  its last "one", the operands before it are the question said back."""
  words = turn.spoken_words()
  starts = answer_word_starts([w for w, _, _ in words], answer)
  return tl.unit_of(words[starts[-1]][1]) if starts else -1
