"""Does the model know what the user is doing where it decides how to answer? A linear read-out of the task.

At every user stop (the user's spoken utterance ends and another turn follows) the model decides,
one unit later, whether and how to answer: a reply to a question, a backchannel in the pause of a
story, a welcome back after a silence. This probe reads the *task* of the utterance off the trunk's
output at that decision unit (`decision_events`: the unit after the user's last word, text_out's
first slot, which predicts the next unit's first text byte): a ridge-regression read-out
(`fit_readout`) fitted on teacher-forced conversations of one split, scored on another, in two
contexts:

- teacher-forced: every stream recorded (the model's own streams are the corpus' reference);
- free-running: the user's streams recorded, the model's own out streams (voice, face, text) the
  ones it drew itself through the streaming engine (`own_out`), as in the behaviour evaluation.

Labels are the corpus tasks, with a story told in parts split into `story_pause` (more parts follow:
a backchannel or silence is due) and `story_end` (a reply is due). A read-out that is right
teacher-forced and wrong free-running says the model's own streams bend what it knows about the
conversation: exposure bias in the turn structure, not a gap in hearing (README "The demo").
"""

from __future__ import annotations

import json

import numpy as np

from data_pipelines.packing import window_tokens
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, Config
from wan_streamer_jax.evaluation.hearing import bucketed

# conversations of the train split the read-out is fitted on (the demo's evaluate stage, launch.evaluate)
FIT_CONVERSATIONS = 200


def decision_events(metadata: dict | str | bytes, num_units: int) -> list[tuple[int, str]]:
  """`(unit, label)` of every spoken user utterance another turn follows, in time order.

  `unit` is the unit after the one holding the utterance's last word (its `words` entries are
  `(text, start_unit, end_unit)`), where the model's next text byte is predicted; events at or past
  `num_units` are dropped. `label` is the utterance's task; a story part (task `backchannel`) is
  `story_pause` when another part of the story follows, else `story_end`.
  """
  meta = json.loads(metadata) if isinstance(metadata, (str, bytes)) else metadata
  turns = sorted(meta["turns"], key=lambda t: t["start_sample"])
  events = []
  for k, turn in enumerate(turns):
    if turn["speaker"] != "user" or turn["kind"] == "typed" or not turn["words"] or k + 1 == len(turns):
      continue
    unit = int(turn["words"][-1][2]) + 1
    if unit >= num_units:
      continue
    label = turn["task"]
    if label == "backchannel":
      more = any(t["speaker"] == "user" and t["task"] == "backchannel" for t in turns[k + 1:])
      label = "story_pause" if more else "story_end"
    events.append((unit, label))
  return events


def decision_states(trunk_fn, cfg: Config, ex: dict, units: list[int], own_out: dict | None = None,
                    bucket_units: int = 32) -> np.ndarray:
  """float32 `[len(units), d]`: the trunk's output at text_out's first slot of each of `units`.

  Args:
    trunk_fn: `(tokens, segment_ids, unit_ids)` int32 `[1, n * L]` -> float `[1, n * L, d]`
      (`WanStreamer.trunk`; n is the conversation's units padded to a multiple of `bucket_units`).
    ex: a token example (`token_data.TokenDataSource`).
    own_out: None (teacher-forced), or out group -> int `[units, group_size]` the model's own tokens of
      each unit, in place of the recorded ones (free-running context).
  """
  layout = schedule.unit_layout(cfg)
  L, n = layout.tokens_per_unit, int(ex["num_units"])
  if own_out is not None:
    ex = dict(ex)
    for group, tokens in own_out.items():
      ex[group] = np.asarray(tokens).reshape(np.shape(ex[group]))
  tokens = window_tokens(layout, ex, 0, n, cfg.text.out_lead_units)[None]
  x = np.asarray(trunk_fn(*bucketed(tokens, L, bucket_units)), np.float32)[0]
  slot = int(np.flatnonzero(np.asarray(layout.group) == GROUPS.index("text_out"))[0])
  return x[np.asarray(units, int) * L + slot]


def fit_readout(features: np.ndarray, labels: list[str], ridge: float = 1.0):
  """A linear read-out `features [n, d]` -> label: standardised features, ridge regression onto the
  one-hot labels (one-vs-rest, `ridge` times the identity added), argmax. Returns `predict(X) -> labels`."""
  classes = sorted(set(labels))
  mean, std = features.mean(0), features.std(0) + 1e-6
  z = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], axis=1)
  onehot = np.eye(len(classes))[[classes.index(y) for y in labels]]
  w = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ onehot)

  def predict(x: np.ndarray) -> list[str]:
    zx = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
    return [classes[i] for i in (zx @ w).argmax(1)]
  return predict


def score(predicted: list[str], labels: list[str]) -> dict:
  """{"events", "accuracy", "per_task": {label: {"n", "right", "read_as": {label: count}}}}."""
  per = {}
  for p, y in zip(predicted, labels):
    row = per.setdefault(y, {"n": 0, "right": 0, "read_as": {}})
    row["n"] += 1
    row["right"] += int(p == y)
    row["read_as"][p] = row["read_as"].get(p, 0) + 1
  right = sum(r["right"] for r in per.values())
  return {"events": len(labels), "accuracy": right / len(labels) if labels else None,
          "per_task": dict(sorted(per.items()))}


def task_knowledge(trunk_fn, cfg: Config, fit_examples: list[tuple[dict, dict]],
                   eval_examples: list[tuple[dict, dict]], own_out: dict | None = None) -> dict:
  """Fits the read-out teacher-forced on `fit_examples`, scores it on `eval_examples`.

  Args:
    trunk_fn: see `decision_states`.
    fit_examples, eval_examples: `(token example, corpus metadata)` pairs of one conversation each.
    own_out: None, or conversation id -> the model's own out tokens (see `decision_states`): the
      evaluation conversations are then also scored in that free-running context.
  Returns:
    {"fit_events", "teacher_forced": score(...), "free_running": score(...) (with `own_out`)}.
  """
  def gather(examples, own=None):
    xs, ys = [], []
    for ex, meta in examples:
      events = decision_events(meta, int(ex["num_units"]))
      if not events:
        continue
      theirs = None if own is None else own[str(ex["conversation_id"])]
      xs.append(decision_states(trunk_fn, cfg, ex, [u for u, _ in events], theirs))
      ys += [y for _, y in events]
    return (np.concatenate(xs) if xs else np.zeros((0, cfg.model.embed_dim), np.float32)), ys

  x_fit, y_fit = gather(fit_examples)
  if len(set(y_fit)) < 2:
    raise ValueError(f"task_knowledge: the fit conversations hold {len(y_fit)} decision events of "
                     f"{len(set(y_fit))} task(s); expected at least two tasks")
  predict = fit_readout(x_fit, y_fit)
  x_eval, y_eval = gather(eval_examples)
  out = {"fit_events": len(y_fit), "teacher_forced": score(predict(x_eval), y_eval)}
  if own_out is not None:
    x_own, y_own = gather(eval_examples, own_out)
    out["free_running"] = score(predict(x_own), y_own)
  return out


def token_pairs(token_dir: str, split: str, corpus_examples: list[dict]) -> list[tuple[dict, dict]]:
  """`(token example, corpus metadata)` of each of `corpus_examples` (corpus dicts of `split`) found in the
  token shards at `token_dir` (`launch.tokenize`), in the shards' order; the rest of the split is not read
  once every asked conversation is found."""
  from data_pipelines.token_data import TokenDataSource
  from wan_streamer_jax.evaluation.runner import conversation_id
  meta = {conversation_id(ex): ex["metadata"] for ex in corpus_examples}
  tokens = TokenDataSource(token_dir, split)
  out = []
  for i in range(len(tokens)):
    t = tokens[i]
    if conversation_id(t) in meta:
      out.append((t, meta[conversation_id(t)]))
      if len(out) == len(meta):
        break
  return out


def model_task_knowledge(model, token_dir: str, fit_corpus: list[dict], eval_corpus: list[dict],
                         own_out: dict | None = None, eval_split: str = "test") -> dict:
  """`task_knowledge` of a `WanStreamer` (e.g. `StreamingEngine.model()`): the read-out fitted teacher-forced
  on `fit_corpus` (corpus dicts of the train split), scored on `eval_corpus` (of `eval_split`), both
  read from the token shards at `token_dir`; `own_out` as `task_knowledge`'s."""
  from flax import nnx
  forward = nnx.jit(lambda m, t, s, u: m.trunk(t, s, u))
  trunk = lambda t, s, u: forward(model, t, s, u)  # noqa: E731
  fit = token_pairs(token_dir, "train", fit_corpus)
  evals = token_pairs(token_dir, eval_split, eval_corpus)
  if len(evals) < len(eval_corpus):
    raise ValueError(f"token_dir: expected the token shards of the evaluated conversations' corpus, "
                     f"{len(evals)} of the {len(eval_corpus)} {eval_split} conversations found in {token_dir}")
  return task_knowledge(trunk, model.cfg, fit, evals, own_out)


def probe_headline(probe: dict) -> dict:
  """Accuracy of the task read-out, all events and the story's pauses, teacher-forced / free-running."""
  out = {}
  for context in ("teacher_forced", "free_running"):
    sc = probe.get(context)
    if sc:
      pause = sc["per_task"].get("story_pause")
      out[context] = {"events": sc["events"], "accuracy": sc["accuracy"],
                      "story_pause": None if pause is None else pause["right"] / pause["n"]}
  return out
