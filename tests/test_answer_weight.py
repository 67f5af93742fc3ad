"""loss.answer_weight: the text_out bytes that spell a conversation's first answer weigh more in the loss."""

import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import text_slots
from data_pipelines.packing import TokenWindow, answer_marks, window_tokens
from data_pipelines.token_data import random_token_example
from tests.helpers import tiny_config
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, ConfigError, TextConfig
from wan_streamer_jax.model.losses import next_unit_loss
from wan_streamer_jax.train.feed import batch_keys, check_batch
from wan_streamer_jax.train.random_data import random_token_batch

CFG = tiny_config()
LAYOUT = schedule.unit_layout(CFG)
L = LAYOUT.tokens_per_unit
UNITS = 16
TEXT_OUT = LAYOUT.group == GROUPS.index("text_out")


def _example(answer_unit=9, seed=0):
  """A reply "purple is nice. I see purple." (units 1-3 and 8-11): the answer is its second "purple"."""
  words = [("purple", 1, 1), ("is", 2, 2), ("nice.", 3, 3), ("I", 8, 8), ("see", 9, 9), ("purple.", 10, 11)]
  turns = [{"speaker": "user", "kind": "reply", "end_unit": 11, "words": [list(w) for w in words]}]
  ex = random_token_example(CFG, UNITS, np.random.default_rng(seed))
  ex["text_out"] = text_slots.layout_text(text_slots.heard_events(turns), UNITS, CFG.text.text_slots)[0]
  ex.update(task="colour", expected_answer="purple", answer_unit=np.int32(answer_unit))
  return ex


def _marked_text(tokens, marks):
  return bytes(int(t) for t in tokens[marks == 1]).decode()


def test_the_marks_sit_on_the_answers_bytes_in_the_window():
  ex = _example()
  # the answer's bytes "purple." are in text_out at units 12 ("purp") and 13 ("le._"; `heard_events` lays a
  # word out in the unit after its last); a window's row r holds unit start + r - 1 (the out stream is
  # shifted), so a window cut there holds part of them
  for start, n, want in ((0, UNITS, "purple."), (6, 8, "purp"), (14, 2, "le."), (0, 6, "")):
    tokens, marks = window_tokens(LAYOUT, ex, start, n), answer_marks(LAYOUT, ex, start, n)
    assert marks.shape == tokens.shape and marks.dtype == np.int32
    assert not marks[~np.tile(TEXT_OUT, n)].any()  # text_out slots only
    assert _marked_text(tokens, marks) == want, (start, n)
  # the run nearest the answer unit: the early "purple" (units 1-2) only when the answer is due there
  early = _example(answer_unit=1)
  assert _marked_text(window_tokens(LAYOUT, early, 0, 6), answer_marks(LAYOUT, early, 0, 6)) == "purple"


def test_no_answer_no_marks_and_no_metadata_is_refused():
  ex = _example()
  for edit in ({"answer_unit": np.int32(-1)}, {"expected_answer": ""}, {"expected_answer": "orange"}):
    assert not answer_marks(LAYOUT, {**ex, **edit}, 0, UNITS).any()
  bare = {k: v for k, v in ex.items() if k not in ("expected_answer", "answer_unit")}
  with pytest.raises(ValueError, match="answer_weight.*expected_answer"):
    answer_marks(LAYOUT, bare, 0, UNITS)


def test_the_window_carries_the_marks_with_sinks_and_a_text_lead():
  win = TokenWindow(LAYOUT, max_units=UNITS, sink_units=1, answers=True)
  out = win.random_map(_example(), np.random.default_rng(0))
  assert _marked_text(out["tokens"], out["answer_mask"]) == "purple."
  led = TokenWindow(LAYOUT, max_units=UNITS, answers=True, text_lead=2).random_map(_example(), np.random.default_rng(0))
  assert _marked_text(led["tokens"], led["answer_mask"]) == "purple."
  marked_units = np.flatnonzero(led["answer_mask"].reshape(UNITS, L).any(-1))
  plain_units = np.flatnonzero(out["answer_mask"].reshape(UNITS, L).any(-1))
  assert marked_units[0] == plain_units[0] - 2  # due two units earlier, the run still found
  assert "answer_mask" not in TokenWindow(LAYOUT, max_units=UNITS).random_map(_example(), np.random.default_rng(0))


def _loss(cfg, marks, logits, tokens):
  seg = jnp.ones_like(tokens)
  return next_unit_loss(cfg, logits, tokens, seg, None, None, None if marks is None else jnp.asarray(marks[None]))


def test_the_loss_weighs_the_answers_targets_and_reports_them():
  ex = _example()
  tokens = jnp.asarray(window_tokens(LAYOUT, ex, 0, UNITS)[None])
  marks = answer_marks(LAYOUT, ex, 0, UNITS)
  rng = np.random.default_rng(0)
  lay = LAYOUT.tile(UNITS)
  logits = {k: jnp.asarray(rng.normal(size=(1, int((lay.kind == i).sum()), int(lay.vocab.max()))), jnp.float32)
            for i, k in enumerate(("text", "audio", "video"))}
  logits = {k: v[..., :{"text": TextConfig.VOCAB_SIZE}.get(k, v.shape[-1])] for k, v in logits.items()}
  weighted = tiny_config(loss={"answer_weight": 20.0})
  base, m_base = _loss(CFG, None, logits, tokens)
  same, m_same = _loss(weighted, np.zeros_like(marks), logits, tokens)
  heavy, m = _loss(weighted, marks, logits, tokens)
  assert float(same) == pytest.approx(float(base), rel=1e-6)  # nothing marked: the plain loss
  assert float(heavy) != pytest.approx(float(base), rel=1e-3)
  # loss/answer: the mean CE of the marked targets (one unit later), by hand
  tgt, _ = schedule.next_unit_targets(tokens, jnp.ones_like(tokens), L)
  tmarks, _ = schedule.next_unit_targets(jnp.asarray(marks[None]), jnp.ones_like(tokens), L)
  text_t = np.asarray(LAYOUT.take_kind(tgt, "text"))[0]
  text_m = np.asarray(LAYOUT.take_kind(tmarks, "text"))[0] == 1
  lg = np.asarray(logits["text"][0], np.float64)
  ce = np.log(np.exp(lg).sum(-1)) - lg[np.arange(len(text_t)), text_t]
  assert int(m["tokens/answer"]) == len("purple.") == int(text_m.sum())
  assert float(m["loss/answer"]) == pytest.approx(ce[text_m].mean(), rel=1e-4)
  assert "loss/answer" not in m_base and float(m_same["tokens/answer"]) == 0


def test_config_keys_and_checks():
  with pytest.raises(ConfigError, match=r"loss\.answer_weight.*>= 1"):
    tiny_config(loss={"answer_weight": 0.5})
  cfg = tiny_config(loss={"answer_weight": 10.0})
  assert cfg.answer_marks and not CFG.answer_marks and batch_keys(cfg)[-1] == "answer_mask"
  batch = random_token_batch(cfg, 0)
  assert not batch["answer_mask"].any()
  check_batch(cfg, batch)
  with pytest.raises(ValueError, match=r"answer_mask.*0 or 1"):
    check_batch(cfg, {**batch, "answer_mask": batch["answer_mask"] + 2})


def test_an_evaluation_weighs_the_answers_mean_by_its_bytes():
  from wan_streamer_jax.train.transformer_task import mean_metrics
  batches = [{"loss": 1.0, "loss/answer": 0.0, "acc/answer": 0.0, "tokens/answer": 0.0},
             {"loss": 3.0, "loss/answer": 2.0, "acc/answer": 0.5, "tokens/answer": 10.0},
             {"loss": 2.0, "loss/answer": 5.0, "acc/answer": 1.0, "tokens/answer": 30.0}]
  m = mean_metrics(batches)
  assert m["loss"] == pytest.approx(2.0) and m["tokens/answer"] == pytest.approx(40 / 3)
  assert m["loss/answer"] == pytest.approx((2 * 10 + 5 * 30) / 40)  # not dragged down by the batch without any
  assert m["acc/answer"] == pytest.approx((0.5 * 10 + 30) / 40)
  assert mean_metrics([]) == {}


def test_only_valid_bytes_make_a_run():
  ex = _example()
  full = text_slots.answer_mask(ex["text_out"], "purple", 9)
  rows = np.flatnonzero(full.any(-1))  # units 12, 13
  cut = np.ones_like(full)
  cut[rows[-1]:] = False  # the answer's last unit outside (e.g. past a window's end)
  np.testing.assert_array_equal(text_slots.answer_mask(ex["text_out"], "purple", 9, valid=cut), full & cut)
  cut[rows[0]:] = False  # none of it valid: the early "purple" is the only run left
  early = text_slots.answer_mask(ex["text_out"], "purple", 9, valid=cut)
  assert early.any() and np.flatnonzero(early.any(-1))[-1] < rows[0]
