"""`loss.text_in_target="heard"`: the user's spoken words as text_in's targets (inputs unchanged)."""

import json

import numpy as np
import pytest

from data_pipelines import pipelines, text_slots
from data_pipelines.packing import TokenWindow, heard_targets
from data_pipelines.token_data import random_token_example, tokenize_conversation
from tests.helpers import tiny_config
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, TextConfig
from wan_streamer_jax.model.transformer import create_model
from wan_streamer_jax.model.losses import next_unit_loss
from wan_streamer_jax.train.feed import batch_keys, check_batch

CFG = tiny_config(loss={"text_in_target": "heard", "text_in": 1.0})
LAYOUT = schedule.unit_layout(CFG)
L = LAYOUT.tokens_per_unit
TURNS = [  # the corpus metadata's turns: words are [word, first unit, last unit]
    {"speaker": "user", "kind": "question", "words": [["what", 1, 2], ["colour", 2, 3]], "end_unit": 3},
    {"speaker": "model", "kind": "answer", "words": [["red", 6, 7]], "end_unit": 7},
    {"speaker": "user", "kind": "typed", "words": [["hi", 8, 8]], "end_unit": 8},
]


def test_heard_words_enter_one_unit_after_their_last_sample():
  slots, placed = text_slots.layout_text(text_slots.heard_events(TURNS), 10, 4)
  assert [(label, wanted, first) for label, wanted, first, _ in placed] == [
      ("what", 3, 3), ("colour", 4, 4), ("<eot>", 4, 6)]
  assert text_slots.decode_slots(slots) == "what colour |"  # the model's and the typed turn are not heard
  assert (slots[:3] == TextConfig.PAD).all()  # nothing before the first word has ended


def _example(units=12, seed=0):
  rng = np.random.default_rng(seed)
  ex = random_token_example(CFG, units, rng)
  ex["text_in"][:] = TextConfig.MISSING  # spoken turns: no text stream
  ex["text_in"][5] = [ord("h"), ord("i"), TextConfig.WORD_END, TextConfig.PAD]  # a typed unit
  ex["heard_text"] = text_slots.layout_text(text_slots.heard_events(TURNS), units, CFG.text.text_slots)[0]
  return ex


def test_targets_differ_from_the_inputs_only_in_text_in():
  ex = _example()
  plain = TokenWindow(LAYOUT, 8, 1).random_map(ex, np.random.default_rng(3))
  heard = TokenWindow(LAYOUT, 8, 1, heard=True).random_map(ex, np.random.default_rng(3))
  np.testing.assert_array_equal(heard["tokens"], plain["tokens"])  # the model reads the same inputs
  np.testing.assert_array_equal(heard["unit_ids"], plain["unit_ids"])
  t_in = np.zeros(L, bool)
  t_in[LAYOUT.group_slices["text_in"]] = True
  other = ~np.tile(t_in, 8)
  np.testing.assert_array_equal(heard["target_tokens"][other], heard["tokens"][other])
  units = heard["unit_ids"][::L]
  merged = heard_targets(ex)["text_in"]
  got = heard["target_tokens"].reshape(8, L)[:, t_in]
  np.testing.assert_array_equal(got, merged[units])
  assert (merged[5] == ex["text_in"][5]).all()  # typed text stays the target where it was typed
  assert (merged[3, 0] == ord("w")) and (merged[0] == TextConfig.PAD).all()  # heard words where not typed
  assert (heard["tokens"].reshape(8, L)[:, t_in][units != 5] == TextConfig.MISSING).all()  # inputs stay MISSING


def test_tokens_without_heard_text_are_refused_naming_the_field():
  ex = _example()
  del ex["heard_text"]
  with pytest.raises(ValueError, match="heard_text.*re-tokenise"):
    TokenWindow(LAYOUT, 8, 1, heard=True).random_map(ex, np.random.default_rng(0))


class _Source:
  def __len__(self):
    return 6

  def __getitem__(self, i):
    return _example(units=10 + i, seed=i)


def test_the_pipeline_feeds_target_tokens_and_the_loss_reads_them():
  batch = next(iter(pipelines.token_pipeline(_Source(), CFG, batch_size=2, seq_units=8, seed=0,
                                             process_index=0, process_count=1)))
  assert batch_keys(CFG) == ("tokens", "segment_ids", "unit_ids", "target_tokens")
  assert set(batch) == set(batch_keys(CFG)) and batch["target_tokens"].shape == batch["tokens"].shape
  check_batch(CFG, batch, 2)
  with pytest.raises(ValueError, match="target_tokens"):
    check_batch(CFG, {k: v for k, v in batch.items() if k != "target_tokens"}, 2)
  model = create_model(CFG)
  logits = model(batch["tokens"], batch["segment_ids"], batch["unit_ids"])
  args = (CFG, logits, batch["tokens"], batch["segment_ids"], batch["unit_ids"])
  _, same = next_unit_loss(*args, target_tokens=batch["tokens"])
  _, base = next_unit_loss(*args)
  _, heard = next_unit_loss(*args, target_tokens=batch["target_tokens"])
  for k in base:
    np.testing.assert_allclose(same[k], base[k], rtol=1e-6)
  assert abs(float(heard["loss/text_in"]) - float(base["loss/text_in"])) > 1e-3  # the targets reached the loss
  for g in ("video_in", "audio_in", "video_out", "audio_out", "text_out"):
    np.testing.assert_allclose(heard[f"loss/{g}"], base[f"loss/{g}"], rtol=1e-6)


def test_text_in_pad_weight_weighs_the_pad_targets_of_text_in_only():
  batch = next(iter(pipelines.token_pipeline(_Source(), CFG, batch_size=2, seq_units=8, seed=0,
                                             process_index=0, process_count=1)))
  only_text_in = {g: 0.0 for g in ("video_in", "audio_in", "video_out", "audio_out", "text_out")}
  model = create_model(CFG)
  logits = model(batch["tokens"], batch["segment_ids"], batch["unit_ids"])
  targets, valid = schedule.next_unit_targets(batch["target_tokens"], batch["segment_ids"], L, batch["unit_ids"])
  tgt, val = (np.asarray(LAYOUT.take_kind(a, "text")) for a in (targets, valid))
  lg = np.asarray(logits["text"], np.float64)
  ce = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1) - np.take_along_axis(lg, tgt[..., None], -1)[..., 0]
  tiled = LAYOUT.tile(batch["tokens"].shape[1] // L)
  text_in = (np.asarray(LAYOUT.take_kind(tiled.group[None], "text"))[0] == GROUPS.index("text_in"))[None] & val
  pad = tgt == TextConfig.PAD
  assert (text_in & pad).any() and (text_in & ~pad).any()
  for pad_weight in (1.0, 0.25, 0.0):
    cfg = CFG.replace(loss={**only_text_in, "text_in_pad_weight": pad_weight})
    loss, metrics = next_unit_loss(cfg, logits, batch["tokens"], batch["segment_ids"], batch["unit_ids"],
                                   target_tokens=batch["target_tokens"])
    w = text_in * np.where(pad, pad_weight, 1.0)
    np.testing.assert_allclose(float(loss), (ce * w).sum() / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss/text_in"]), ce[text_in].mean(), rtol=1e-5)  # reported unweighted
  with pytest.raises(ValueError, match="loss.text_in_pad_weight"):
    CFG.replace(loss={"text_in_pad_weight": 2.0})


def _tokenize(metadata):
  units, s = 6, CFG.text.text_slots
  spu = CFG.audio.samples_per_unit
  conv = {"num_units": np.int32(units), "user_audio": np.zeros(units * spu, np.float32),
          "model_audio": np.zeros(units * spu, np.float32),
          "user_video": np.zeros((units * 4, CFG.video.height, CFG.video.width, 3), np.uint8),
          "model_video": np.zeros((units * 4, CFG.video.height, CFG.video.width, 3), np.uint8),
          "user_text": np.full((units, s), TextConfig.MISSING, np.int32),
          "model_text": np.full((units, s), TextConfig.PAD, np.int32),
          "user_camera_on": np.ones(units, bool), "metadata": metadata}
  audio = lambda w: np.zeros((1, units * 4, CFG.audio.num_quantizers), np.int32)  # noqa: E731
  video = lambda f: np.zeros((1, units, CFG.video.tokens_per_unit), np.int32)  # noqa: E731
  return tokenize_conversation(conv, CFG, audio, video)


def test_tokenizing_writes_heard_text_from_the_corpus_timeline_only():
  ex = _tokenize(json.dumps({"turns": TURNS}).encode())
  assert text_slots.decode_slots(ex["heard_text"]) == "what colour"  # its END_OF_TURN falls past unit 5
  assert (ex["text_in"] == TextConfig.MISSING).all()  # the input stream is untouched
  # a recorded conversation (no timeline in its metadata) tokenises without it
  assert "heard_text" not in _tokenize(json.dumps({"source_folder": "/x", "transcript": None}))


def test_a_bad_text_in_target_is_refused():
  with pytest.raises(ValueError, match="loss.text_in_target"):
    tiny_config(loss={"text_in_target": "transcript"})
