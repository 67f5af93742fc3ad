"""The whole job, from corpus to a dialogue you can watch and hear.

    python -m launch.demo --quick --workdir=/tmp/wan_demo_quick   # every stage, tiny settings, minutes
    python -m launch.demo --workdir=/tmp/wan_demo                 # the documented run (~2 h on 2 CPU cores)

Stages (`wan_streamer_jax/demo/pipeline.py`): corpus -> audio codec -> video codec
-> tokens -> Transformer -> evaluation on held-out dialogues -> one held-out
dialogue streamed through the engine; ends with a table of the headline figures
and where every output is. A re-run skips finished stages and resumes an
interrupted one from its checkpoint; Ctrl-C saves the running training stage.
"""

from __future__ import annotations

import dataclasses
import json

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/wan_demo", "Folder of every stage's outputs.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny settings: the whole chain in minutes, weak figures.")
_UNTIL = flags.DEFINE_string("until", None, "Stop after this stage (corpus, audio_codec, video_codec, tokens, "
                             "transformer, own_history, evaluate, stream).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show tqdm progress bars on stderr.")
_WORDS = flags.DEFINE_bool("word_by_word_replies", False, "Corpus: the model's speech said one word at a time "
                           "(`CorpusSpec.word_by_word_replies`; every stage from the corpus on is then another one).")


def main(argv):
  del argv
  from wan_streamer_jax.demo.pipeline import run_demo
  from wan_streamer_jax.demo.plan import DOCUMENTED, QUICK
  from wan_streamer_jax.demo.stages import Interrupted
  plan = QUICK if _QUICK.value else DOCUMENTED
  if _WORDS.value:
    plan = dataclasses.replace(plan, corpus_spec={**plan.corpus_spec, "word_by_word_replies": True})
  try:
    result = run_demo(plan, _WORKDIR.value, progress=_PROGRESS.value, until=_UNTIL.value)
  except Interrupted as e:
    print(f"{e}; its checkpoint is saved: run the same command again to resume", flush=True)
    return 1
  print("\n" + result["table"], flush=True)
  print(json.dumps({"plan": plan.name, "workdir": result["workdir"], "seconds": round(result["seconds"], 1),
                    "skipped": result["skipped"]}), flush=True)
  return 0


def run():
  common.run(main)


if __name__ == "__main__":
  run()
