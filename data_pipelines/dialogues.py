"""The dialogue tasks of the synthetic corpus, written against `Timeline`.

Each task function places its turns on the timeline and returns a record of
what the model is expected to do (answer text, the units involved). Tasks:

- greeting: hello <-> hello (sometimes the model opens);
- arithmetic: "what is three plus four" -> "the answer is seven" (sometimes typed, not spoken);
- colour: "what colour is the shape I am showing" -> the colour seen in the
  user's video (or "your camera is off" / "I do not see a shape");
- repeat: "repeat after me: purple monkey" -> "you said purple monkey";
- interrupt: the model talks, the user cuts in, the model stops within 1-3 units;
- backchannel: the user talks in parts, the model says "mhm" in the pauses;
- silence: the user asks for a moment, nobody talks for a while.

Every reply that ends a user turn has at least four words: a Full-Duplex-Bench
takeover is >= 1 s of speech or more than 3 words, so the reference model takes
every turn it is scripted to take (a short "seven." would score as a
backchannel), while backchannels ("mhm.", "I see.") stay below both limits.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.timeline import Timeline

TASKS = ("greeting", "arithmetic", "colour", "repeat", "interrupt", "backchannel", "silence")

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
  """0..100 in English words ("forty two")."""
  if not 0 <= n <= 100:
    raise ValueError(f"number_words covers 0..100, got {n}")
  if n < 20:
    return _ONES[n]
  if n == 100:
    return "one hundred"
  tens, ones = divmod(n, 10)
  return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])


@dataclasses.dataclass
class SceneContext:
  """What the user's camera shows; tasks read it and request the shape to be shown."""

  camera_on: bool
  shape_colour: str
  shape_kind: str
  shape_spans: list = dataclasses.field(default_factory=list)  # [(start_sample, end_sample)]


def _pick(rng, options):
  return options[int(rng.integers(len(options)))]


def greeting(tl: Timeline, ctx: SceneContext) -> dict:
  rng = tl.rng
  if rng.random() < 0.3:
    tl.model_opens(_pick(rng, ("hello, how can I help you today?", "hi there, nice to see you.")), "greeting")
    tl.user_says(_pick(rng, ("hi.", "hello.", "hey, good to see you.")), "greeting")
    return {"task": "greeting"}
  tl.user_says(_pick(rng, ("hello.", "hi there.", "good morning.", "hey, how are you?")), "greeting")
  tl.model_replies(_pick(rng, ("hello! nice to see you.", "hi, how can I help?", "hello, I am doing well.")),
                   "greeting")
  return {"task": "greeting"}


ARITHMETIC_OPS = ("plus", "minus", "times")
ARITHMETIC_OPERANDS = range(0, 11)  # both operands drawn uniformly from 0..10


def arithmetic_result(a: int, op: str, b: int) -> tuple[int, int, int]:
  """(a, b, result) as asked: "minus" swaps the operands so the result is never negative."""
  if op == "minus" and b > a:
    a, b = b, a
  return a, b, {"plus": a + b, "minus": a - b, "times": a * b}[op]


def arithmetic(tl: Timeline, ctx: SceneContext, typed_prob: float = 0.15) -> dict:
  rng = tl.rng
  op = _pick(rng, ARITHMETIC_OPS)
  a, b = int(rng.integers(0, 11)), int(rng.integers(0, 11))
  a, b, result = arithmetic_result(a, op, b)
  question = f"what is {number_words(a)} {op} {number_words(b)}?"
  answer = number_words(result)
  typed = rng.random() < typed_prob
  (tl.user_types if typed else tl.user_says)(question, "arithmetic")
  reply = _pick(rng, (f"the answer is {answer}.", f"I think it is {answer}.",
                      f"{number_words(a)} {op} {number_words(b)} is {answer}."))
  turn = tl.model_replies(reply, "arithmetic", answer=answer)
  return {"task": "arithmetic", "answer": answer, "typed": typed, "turn": turn}


NO_SHAPE_PROB = 0.15
CAMERA_OFF_ANSWER, NO_SHAPE_ANSWER = "your camera is off", "I do not see any shape"


def colour(tl: Timeline, ctx: SceneContext, no_shape_prob: float = NO_SHAPE_PROB) -> dict:
  rng = tl.rng
  show = rng.random() >= no_shape_prob
  show_from = tl.cursor + int(rng.uniform(0.0, 1.0) * tl.spu)
  q = tl.user_says(_pick(rng, ("what colour is the shape I am showing?", "can you tell me the colour of this shape?",
                               "what colour is this?")), "colour", gap=(2.0, 4.0))
  if not ctx.camera_on:
    answer = CAMERA_OFF_ANSWER
    reply = f"I cannot see you, {answer}."
  elif not show:
    answer = reply = NO_SHAPE_ANSWER
    reply += "."
  else:
    answer = ctx.shape_colour
    reply = _pick(rng, (f"the shape is {answer}.", f"I think that is {answer}.", f"I see a {answer} {ctx.shape_kind}."))
  turn = tl.model_replies(reply, "colour", answer=answer)
  if show:
    ctx.shape_spans.append((min(show_from, q.start), turn.end + int(rng.integers(1, 4)) * tl.spu))
  return {"task": "colour", "answer": answer, "shape_shown": show, "turn": turn}


REPEAT_PHRASES = ("purple monkey", "banana boat", "seven blue tables", "quiet river", "green apple pie",
                 "tiny robot", "happy birthday", "silver moon", "orange cat", "windy hill")


def repeat(tl: Timeline, ctx: SceneContext) -> dict:
  phrase = _pick(tl.rng, REPEAT_PHRASES)
  tl.user_says(f"repeat after me: {phrase}.", "repeat")
  turn = tl.model_replies(f"you said {phrase}.", "repeat", answer=phrase)
  return {"task": "repeat", "answer": phrase, "turn": turn}


_LONG_REPLIES = (
    "well, this morning I went for a long walk by the river and watched the boats go past the old bridge.",
    "sure, the weather tomorrow will be sunny in the morning, then cloudy, with some rain in the evening.",
    "let me tell you a story about a small robot who wanted to learn how to paint the sea at night.",
)


def interrupt(tl: Timeline, ctx: SceneContext) -> dict:
  rng = tl.rng
  tl.user_says(_pick(rng, ("tell me about your day.", "what will the weather be like?", "tell me a story.")),
               "interrupt")
  cut_in = _pick(rng, ("wait, stop please.", "sorry, hold on a second.", "hang on, let me say something."))
  model, _ = tl.model_interrupted(_pick(rng, _LONG_REPLIES), cut_in, "interrupt")
  tl.model_replies(_pick(rng, ("okay, please go ahead.", "sure, I am listening.", "sorry, please go on.")), "interrupt")
  return {"task": "interrupt", "interrupt_unit": tl.events["interrupt_unit"],
          "stop_unit": tl.events["stop_unit"], "interrupted": model.interrupted}


_STORY = (("I went to the market today,", "and I bought some fresh bread,", "then I walked home in the rain."),
          ("my sister called me this morning,", "she is moving to a new city,", "I will miss her a lot."),
          ("I have been learning the piano,", "it is harder than I thought,", "but I practice every day."))


def backchannel(tl: Timeline, ctx: SceneContext) -> dict:
  rng = tl.rng
  parts = _pick(rng, _STORY)
  n_bc = 0
  for i, part in enumerate(parts):
    tl.user_says(part, "backchannel", gap=(1.0, 2.0) if i else (1.0, 4.0))
    if i + 1 < len(parts):
      if rng.random() < 0.75:
        tl.model_backchannel(_pick(rng, ("mhm.", "yeah.", "okay.", "I see.")), "backchannel")
        n_bc += 1
      else:
        tl.silence(int(rng.integers(1, 3)))
  tl.model_replies(_pick(rng, ("oh, that sounds lovely.", "thank you for telling me.", "I understand, thank you.")),
                   "backchannel")
  return {"task": "backchannel", "backchannels": n_bc}


def silence(tl: Timeline, ctx: SceneContext) -> dict:
  rng = tl.rng
  tl.user_says(_pick(rng, ("give me a second.", "hold on, let me think.", "one moment please.")), "silence")
  tl.model_replies(_pick(rng, ("sure, take your time.", "of course, take your time.")), "silence")
  units = int(rng.integers(8, 21))
  tl.silence(units)
  tl.user_says(_pick(rng, ("okay, I am back.", "alright, thanks.")), "silence")
  tl.model_replies(_pick(rng, ("welcome back, I am here.", "great, let us continue.")), "silence")
  return {"task": "silence", "silent_units": units}


TASK_FNS = {"greeting": greeting, "arithmetic": arithmetic, "colour": colour, "repeat": repeat,
            "interrupt": interrupt, "backchannel": backchannel, "silence": silence}


def sample_tasks(rng: np.random.Generator, max_tasks: int = 3) -> list[str]:
  """1..max_tasks tasks; a greeting comes first half the time; no task twice."""
  main = [t for t in TASKS if t != "greeting"]
  n = int(rng.integers(1, max_tasks + 1))
  tasks = ["greeting"] if (rng.random() < 0.5 and n > 1) else []
  picks = rng.permutation(len(main))[: n - len(tasks)]
  return tasks + [main[i] for i in picks]
