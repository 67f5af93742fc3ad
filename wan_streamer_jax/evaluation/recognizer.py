"""An independent judge of the model's SPEECH: pocketsphinx restricted to the corpus' vocabulary.

The `pocketsphinx` wheel ships an English acoustic model and dictionary (no
download). Its general language model gets eSpeak speech mostly wrong, so each
task is decoded with a JSGF grammar of exactly the replies the corpus scripts
for it (`data_pipelines.dialogues`): "[the answer is] <result>" for arithmetic,
"<colour> [<shape>]" sentences for colour, "[you said] <phrase>" for repeat. A
grammar always returns one of its sentences, so audio without speech is never
sent to it (the caller decides: no speech, no answer). Its accuracy on the
corpus' own reference speech is the ceiling reported beside every figure it
judges.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

RECOGNISER_RATE = 16000  # the shipped en-us model's sample rate


def _alternatives(items) -> str:
  return " | ".join(items)


def task_grammars() -> dict[str, str]:
  """JSGF grammar per answer task, built from the corpus' reply templates and vocabulary.

  Arithmetic: operands 0..10 and only the results the corpus can ask for (its answer prior's support).
  """
  from data_pipelines import dialogues, scenes
  from wan_streamer_jax.evaluation.answers import answer_distribution
  header = "#JSGF V1.0;\ngrammar {name};\n"
  operands = _alternatives(dialogues.number_words(n) for n in dialogues.ARITHMETIC_OPERANDS)
  results = _alternatives(sorted(answer_distribution("arithmetic")))
  ops = _alternatives(dialogues.ARITHMETIC_OPS)
  arithmetic = (header.format(name="arithmetic") + f"<operand> = {operands};\n<result> = {results};\n"
                f"public <reply> = [<operand> ({ops}) <operand> is | the answer is | i think it is] <result>;\n")
  colours = _alternatives(scenes.SHAPE_COLOURS)
  kinds = _alternatives(scenes.SHAPE_KINDS)
  colour = (header.format(name="colour") + f"<colour> = {colours};\n<kind> = {kinds};\n"
            "public <reply> = (the shape is | i think that is) <colour> | i see a <colour> <kind> | "
            f"i cannot see you {dialogues.CAMERA_OFF_ANSWER.lower()} | {dialogues.NO_SHAPE_ANSWER.lower()};\n")
  repeat = (header.format(name="repeat") +
            f"<phrase> = {_alternatives(dialogues.REPEAT_PHRASES)};\npublic <reply> = [you said] <phrase>;\n")
  return {"arithmetic": arithmetic, "colour": colour, "repeat": repeat}


class SpeechJudge:
  """Transcribes a stretch of speech with the grammar of one task.

      judge = SpeechJudge(sample_rate=16000)
      judge.transcribe(audio, "arithmetic")   # float32 [samples] in [-1, 1] -> ["it", "is", "seven"]
  """

  def __init__(self, sample_rate: int):
    from pocketsphinx import Decoder
    self.sample_rate = int(sample_rate)
    g = math.gcd(self.sample_rate, RECOGNISER_RATE)
    self._up, self._down = RECOGNISER_RATE // g, self.sample_rate // g
    self._decoder = Decoder(samprate=RECOGNISER_RATE, lm=None, logfn="/dev/null")
    self.grammars = task_grammars()
    for task, grammar in self.grammars.items():
      self._decoder.add_jsgf_string(task, grammar)

  def transcribe(self, audio: np.ndarray, task: str) -> list[str]:
    """Words recognised in `audio` (float32 `[samples]` at `sample_rate`) under `task`'s grammar."""
    if task not in self.grammars:
      raise ValueError(f"SpeechJudge.transcribe: task must be one of {sorted(self.grammars)}, got {task!r}")
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1 or audio.shape[0] == 0:
      raise ValueError(f"SpeechJudge.transcribe: expected float audio [samples] (non-empty), got {audio.shape}")
    if (self._up, self._down) != (1, 1):
      audio = signal.resample_poly(audio, self._up, self._down).astype(np.float32)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    d = self._decoder
    d.activate_search(task)
    d.start_utt()
    d.process_raw(pcm, False, True)
    d.end_utt()
    hyp = d.hyp()
    return hyp.hypstr.split() if hyp is not None and hyp.hypstr else []
