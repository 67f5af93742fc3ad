"""The model side of an evaluation, in the streaming engine's output format.

Both rows of the evaluation go through the same code: the model row is the
engine's `run_stream` outputs (user streams teacher-forced from the corpus, the
model's streams free-running), the reference row is the corpus' own model
streams laid out as if an engine had produced them (`reference_outputs`). Then
`streams_of(outputs, slot, num_units)` gives one dialogue's `ModelStreams`.

Engine output layout (STREAMING_API): a dict with a leading `[units]` axis and
the slot axis `[S]` next: audio float32 `[U, S, samples_per_unit]`, video uint8
`[U, S, 4, H, W, 3]`, text int32 `[U, S, text_slots]`, turn_state int32 `[U, S]`
(0 silent, 1 speaking, 2 yielded).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wan_streamer_jax import schedule
from wan_streamer_jax.config import FRAMES_PER_UNIT, TextConfig

TURN_SILENT, TURN_SPEAKING, TURN_YIELDED = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class ModelStreams:
  """One dialogue's model streams: audio float32 `[U * spu]`, video uint8 `[U * 4, H, W, 3]`,
  text int32 `[U, text_slots]`, turn_state int32 `[U]`."""

  audio: np.ndarray
  video: np.ndarray
  text: np.ndarray
  turn_state: np.ndarray


def _num_units(ex: dict) -> int:
  return int(ex["num_units"])


def reference_turn_state(text: np.ndarray) -> np.ndarray:
  """int32 `[U]` of a recorded text stream `[U, text_slots]`, by the engine's rule (`StreamingEngine.step_fn`).

  A turn starts with the first byte or WORD_END and lasts until END_OF_TURN:
  2 (yielded) in the unit that emits END_OF_TURN, 1 (speaking) inside a turn, 0 otherwise.
  """
  text = np.asarray(text)
  eot = (text == TextConfig.END_OF_TURN).any(axis=1)
  spoke = ((text < 256) | (text == TextConfig.WORD_END)).any(axis=1)
  state, in_turn = np.zeros(text.shape[0], np.int32), False
  for u in range(text.shape[0]):
    in_turn = False if eot[u] else (in_turn or bool(spoke[u]))
    state[u] = TURN_YIELDED if eot[u] else TURN_SPEAKING if in_turn else TURN_SILENT
  return state


def reference_outputs(examples: list[dict]) -> dict:
  """The corpus' model streams of `examples` (one per slot) as an engine's `[U, S, ...]` outputs.

  Units past a dialogue's end are silence (zeros, PAD text, turn state 0), as an
  inactive engine slot's outputs are.
  """
  if not examples:
    raise ValueError("reference_outputs: expected at least one example")
  U = max(_num_units(ex) for ex in examples)
  S = len(examples)
  ex0 = examples[0]
  spu = np.asarray(ex0["model_audio"]).shape[0] // _num_units(ex0)
  H, W = np.asarray(ex0["model_video"]).shape[1:3]
  slots = np.asarray(ex0["model_text"]).shape[1]
  out = {"audio": np.zeros((U, S, spu), np.float32),
         "video": np.zeros((U, S, FRAMES_PER_UNIT, H, W, 3), np.uint8),
         "text": np.full((U, S, slots), TextConfig.PAD, np.int32),
         "turn_state": np.zeros((U, S), np.int32), "unit": np.tile(np.arange(U, dtype=np.int32)[:, None], (1, S))}
  for s, ex in enumerate(examples):
    n = _num_units(ex)
    audio = np.asarray(ex["model_audio"], np.float32)
    out["audio"][:n, s] = audio.reshape(n, spu)
    out["video"][:n, s] = np.asarray(ex["model_video"]).reshape(n, FRAMES_PER_UNIT, H, W, 3)
    out["text"][:n, s] = np.asarray(ex["model_text"])
    out["turn_state"][:n, s] = reference_turn_state(np.asarray(ex["model_text"]))
  return out


def speech_aligned_text(outputs: dict, lead_units: int) -> dict:
  """Engine-format `outputs` with the model's text and turn state moved `lead_units` later (PAD and 0 in
  the first units): a model with `text.out_lead_units = k` emits a word's bytes k units before its
  voice, and its words are scored where they are spoken, as the reference row's are."""
  if lead_units == 0:
    return outputs
  out = dict(outputs)
  for key, fill in (("text", TextConfig.PAD), ("turn_state", 0)):
    out[key] = schedule.shift_units(np.asarray(outputs[key]), lead_units, fill, axis=0)
  return out


def streams_of(outputs: dict, slot: int, num_units: int) -> ModelStreams:
  """Slot `slot`'s first `num_units` units of engine-format `outputs`, flattened over time."""
  for key in ("audio", "video", "text", "turn_state"):
    if key not in outputs:
      raise ValueError(f"streams_of: outputs lack {key!r} (have {sorted(outputs)})")
  U = outputs["audio"].shape[0]
  if not 0 < num_units <= U:
    raise ValueError(f"streams_of: num_units must be in 1..{U} (the outputs' units), got {num_units}")
  a = np.asarray(outputs["audio"][:num_units, slot], np.float32)
  v = np.asarray(outputs["video"][:num_units, slot])
  return ModelStreams(audio=a.reshape(-1), video=v.reshape((-1,) + v.shape[2:]),
                      text=np.asarray(outputs["text"][:num_units, slot], np.int32),
                      turn_state=np.asarray(outputs["turn_state"][:num_units, slot], np.int32))


def engine_inputs(examples: list[dict], num_slots: int | None = None,
                  seeds: list[int] | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
  """The user streams of `examples` (one per slot) as `run_stream` inputs, teacher-forced.

  Returns (inputs_seq, active_seq bool `[U, S]`, reset_seq bool `[U, S]`): audio float32
  `[U, S, spu]`, video uint8 `[U, S, 4, H, W, 3]`, camera_on bool `[U, S]`, text int32 `[U, S, slots]`,
  seed int32 `[U, S]` (each conversation's sampling seed, `seeds[i]`, default i; read at the reset).
  Slots are active for their dialogue's units and reset at unit 0; slots past the examples
  (`num_slots` > len(examples)) stay inactive.
  """
  U, S = max(_num_units(ex) for ex in examples), num_slots or len(examples)
  if S < len(examples):
    raise ValueError(f"engine_inputs: {len(examples)} dialogues need num_slots >= {len(examples)}, got {S}")
  ex0 = examples[0]
  spu = np.asarray(ex0["user_audio"]).shape[0] // _num_units(ex0)
  H, W = np.asarray(ex0["user_video"]).shape[1:3]
  slots = np.asarray(ex0["user_text"]).shape[1]
  inputs = {"audio": np.zeros((U, S, spu), np.float32),
            "video": np.zeros((U, S, FRAMES_PER_UNIT, H, W, 3), np.uint8),
            "camera_on": np.zeros((U, S), bool), "text": np.full((U, S, slots), TextConfig.PAD, np.int32),
            "seed": np.zeros((U, S), np.int32)}
  seeds = list(range(len(examples))) if seeds is None else list(seeds)
  active = np.zeros((U, S), bool)
  for s, ex in enumerate(examples):
    n = _num_units(ex)
    inputs["audio"][:n, s] = np.asarray(ex["user_audio"], np.float32).reshape(n, spu)
    inputs["video"][:n, s] = np.asarray(ex["user_video"]).reshape(n, FRAMES_PER_UNIT, H, W, 3)
    inputs["camera_on"][:n, s] = np.asarray(ex["user_camera_on"], bool)
    inputs["text"][:n, s] = np.asarray(ex["user_text"], np.int32)
    inputs["seed"][:, s] = seeds[s]
    active[:n, s] = True
  reset = np.zeros((U, S), bool)
  reset[0] = True
  return inputs, active, reset
