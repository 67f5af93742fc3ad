"""Loss marks (`data_pipelines/loss_marks.py`): the answer's reply, the user's pauses and stops weigh more."""

import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import loss_marks, text_slots
from data_pipelines.loss_marks import ANSWER, NONE, PAUSE, REPLY, STOP
from data_pipelines.packing import TokenWindow, window_tokens
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
UNITS = 32
SLOTS = CFG.text.text_slots
TEXT_OUT = LAYOUT.group == GROUPS.index("text_out")
QUESTION = [("what", 2, 2), ("colour", 3, 3), ("is", 4, 4), ("this?", 5, 6)]  # (word, first, last unit)
STORY = [("I", 14, 14), ("went", 15, 15), ("home,", 16, 17)], [("then", 21, 21), ("slept.", 22, 23)]


def _model_text(turns):
  """text_out of model turns [(first unit of each word, words)]: a word due where it starts, END_OF_TURN
  in the turn's last unit (the word units + 1), as the corpus lays it out."""
  events = []
  for units, words in turns:
    events += [text_slots.word_event(u, w) for u, w in zip(units, words)]
    events.append(text_slots.end_of_turn_event(units[-1] + 1))
  return text_slots.layout_text(events, UNITS, SLOTS)[0]


def _example(reply="I see a red square.", answer="red", backchannel=("mhm.",), resume=0):
  """A colour question (user units 2-6), the reply from unit 8 (the corpus' onset: 2 units after the
  user's last), a story told in two parts (units 14-17 and 21-23, `resume` units later) with `backchannel`
  from unit 19 between."""
  second = [(w, a + resume, b + resume) for w, a, b in STORY[1]]
  user = [{"speaker": "user", "kind": "speech", "words": [list(w) for w in ws]} for ws in (QUESTION, STORY[0], second)]
  words = reply.split()
  model = [(list(range(8, 8 + len(words))), words), (list(range(19, 19 + len(backchannel))), list(backchannel))]
  ex = random_token_example(CFG, UNITS, np.random.default_rng(0))
  ex["heard_text"] = text_slots.layout_text(text_slots.heard_events(user), UNITS, SLOTS)[0]
  ex["text_in"] = text_slots.missing_text(UNITS, SLOTS)
  ex["text_out"] = _model_text(model)
  ex.update(task="colour", expected_answer=answer, answer_unit=np.int32(8 + words.index(answer.split()[0] + (
      "." if answer.split()[0] + "." in words else ""))))
  return ex


def _units(marks, code):
  return [int(u) for u in np.flatnonzero((marks == code).any(-1))]


def test_the_reply_and_the_pause_windows():
  ex = _example()
  assert loss_marks.user_utterances(ex) == [(3, 6), (15, 17), (22, 23)]  # heard one unit after each word
  m = loss_marks.unit_marks(ex, answers=True, pauses=True)
  # the reply: from the user's last unit (6) to its END_OF_TURN (unit 14: "square." spills into 13), "red"
  # (unit 11) inside it
  assert _units(m, REPLY) == list(range(6, 15)) and _units(m, ANSWER) == [11]
  assert bytes(int(t) for t in ex["text_out"][m == ANSWER]).decode() == "red"
  # the pause: from the story's first part's last unit to the second part's last unit
  assert _units(m, PAUSE) == list(range(17, 24))
  assert _units(m, NONE) == [u for u in range(UNITS) if not 6 <= u <= 14 and not 17 <= u <= 23]
  only_pauses = loss_marks.unit_marks(ex, answers=False, pauses=True)
  assert not np.isin(only_pauses, (REPLY, ANSWER)).any() and (only_pauses == PAUSE).sum() == (m == PAUSE).sum()
  assert not (loss_marks.unit_marks(ex, answers=True, pauses=False) == PAUSE).any()


def test_every_stop_weighs_alike_whatever_follows_it():
  """STOP windows follow the user's stops alone: after the story's first part the same units weigh the
  same whether the model backchannels (a pause) or replies (a turn's end) — PAUSE windows differ there,
  which priced a takeover in run 7 (turns held like pauses)."""
  pause, turn = _example(), _example(backchannel=("sure,", "take", "your", "time."), resume=4)
  assert loss_marks.stop_windows(pause) == [(6, 10), (17, 21), (23, 27)]
  stops = [loss_marks.unit_marks(e, answers=False, pauses=False, stops=True) for e in (pause, turn)]
  assert _units(stops[0], STOP) == [*range(6, 11), *range(17, 22), *range(23, 28)]
  assert _units(stops[1], STOP) == [*range(6, 11), *range(17, 22), *range(27, 32)]  # resumed 4 units later
  np.testing.assert_array_equal(stops[0][:23], stops[1][:23])  # the first part's stop: the same units
  pauses = [loss_marks.unit_marks(e, answers=False, pauses=True) for e in (pause, turn)]
  assert (pauses[0][17:22] == PAUSE).all() and not pauses[1].any()  # the pause window: only where one follows
  # in one example the later windows' codes win: STOP < PAUSE < REPLY < ANSWER
  m = loss_marks.unit_marks(pause, answers=True, pauses=True, stops=True)
  assert _units(m, STOP) == [24, 25, 26, 27] and _units(m, PAUSE) == list(range(17, 24))
  assert _units(m, REPLY) == list(range(6, 15)) and _units(m, ANSWER) == [11]


def test_every_template_weighs_the_same_where_the_reply_is_chosen():
  """Run 6's bias: with the answer's bytes alone marked, "I do not see any shape." (the answer is the whole
  reply) weighed its first bytes 10x and "I see a red square." 1x. The window weighs both alike."""
  seen, unseen = _example(), _example("I do not see any shape.", "I do not see any shape")
  m_seen, m_unseen = (loss_marks.unit_marks(e, True, False) for e in (seen, unseen))
  weighed = lambda m: np.isin(m, (REPLY, ANSWER))  # noqa: E731  (both weigh loss.answer_weight)
  np.testing.assert_array_equal(weighed(m_seen)[:15], weighed(m_unseen)[:15])  # to the shorter reply's end
  assert weighed(m_seen)[8, 0]  # the reply's first byte ("I" in both)
  assert text_slots.decode_slots(unseen["text_out"][m_unseen == ANSWER]) == "Idonotseeanyshape."


def test_a_reply_between_two_utterances_is_no_pause():
  ex = _example(backchannel=("sure,", "take", "your", "time."), resume=4)  # the corpus' replies: >= 4 words
  assert loss_marks.pause_windows(ex) == []
  assert loss_marks.pause_windows(_example(backchannel=("I", "see."))) == [(17, 23)]


def test_marks_need_their_metadata():
  ex = _example()
  for edit in ({"answer_unit": np.int32(-1)}, {"expected_answer": ""}, {"expected_answer": "orange"}):
    assert not np.isin(loss_marks.unit_marks({**ex, **edit}, True, False), (REPLY, ANSWER)).any()
  bare = {k: v for k, v in ex.items() if k not in ("expected_answer", "answer_unit")}
  with pytest.raises(ValueError, match="answer_weight.*expected_answer"):
    loss_marks.unit_marks(bare, True, False)
  with pytest.raises(ValueError, match="heard_text"):
    loss_marks.unit_marks({k: v for k, v in ex.items() if k != "heard_text"}, False, True)


def _marked_text(tokens, marks, code=ANSWER):
  return bytes(int(t) for t in tokens[(marks == code) & (tokens < 256)]).decode()


def test_the_marks_sit_on_the_windows_text_out_slots():
  ex = _example()
  marks_all = loss_marks.unit_marks(ex, True, True)
  # "red" is due at unit 11 and the window's row r holds out-unit start + r - 1 (the shift)
  for start, n, want in ((0, UNITS, "red"), (8, 6, "red"), (13, 4, ""), (0, 8, "")):
    tokens, marks = window_tokens(LAYOUT, ex, start, n), loss_marks.window_marks(LAYOUT, marks_all, start, n)
    assert marks.shape == tokens.shape and marks.dtype == np.int32
    assert not marks[~np.tile(TEXT_OUT, n)].any()  # text_out slots only
    assert _marked_text(tokens, marks) == want, (start, n)
  whole = loss_marks.window_marks(LAYOUT, marks_all, 0, UNITS).reshape(UNITS, L)[:, TEXT_OUT]
  np.testing.assert_array_equal(whole[1:], marks_all[:-1])


def test_the_window_carries_the_marks_with_sinks_and_a_text_lead():
  win = TokenWindow(LAYOUT, max_units=UNITS, sink_units=1, answers=True, pauses=True)
  out = win.random_map(_example(), np.random.default_rng(0))
  assert _marked_text(out["tokens"], out["loss_marks"]) == "red"
  assert _marked_text(out["tokens"], out["loss_marks"], PAUSE) == "mhm."
  stops = TokenWindow(LAYOUT, max_units=UNITS, stops=True).random_map(_example(), np.random.default_rng(0))
  # the reply's first words (units 8-10 of 6-10) and the backchannel (unit 19 of 17-21)
  assert _marked_text(stops["tokens"], stops["loss_marks"], STOP) == "Iseeamhm."
  assert set(np.unique(stops["loss_marks"])) == {NONE, STOP}
  led = TokenWindow(LAYOUT, max_units=UNITS, answers=True, text_lead=2).random_map(_example(), np.random.default_rng(0))
  assert _marked_text(led["tokens"], led["loss_marks"]) == "red"
  first = lambda o: np.flatnonzero((o["loss_marks"].reshape(UNITS, L) == ANSWER).any(-1))[0]  # noqa: E731
  assert first(led) == first(out) - 2  # due two units earlier, the run still found
  assert "loss_marks" not in TokenWindow(LAYOUT, max_units=UNITS).random_map(_example(), np.random.default_rng(0))


def _loss(cfg, marks, logits, tokens):
  seg = jnp.ones_like(tokens)
  return next_unit_loss(cfg, logits, tokens, seg, None, None, None if marks is None else jnp.asarray(marks[None]))


def test_the_loss_weighs_the_marked_targets_and_reports_them():
  ex = _example()
  tokens = jnp.asarray(window_tokens(LAYOUT, ex, 0, UNITS)[None])
  marks = loss_marks.window_marks(LAYOUT, loss_marks.unit_marks(ex, True, True, True), 0, UNITS)
  rng = np.random.default_rng(0)
  lay = LAYOUT.tile(UNITS)
  logits = {k: jnp.asarray(rng.normal(size=(1, int((lay.kind == i).sum()), int(lay.vocab.max()))), jnp.float32)
            for i, k in enumerate(("text", "audio", "video"))}
  logits = {k: v[..., :{"text": TextConfig.VOCAB_SIZE}.get(k, v.shape[-1])] for k, v in logits.items()}
  base, m_base = _loss(CFG, None, logits, tokens)
  same, m_same = _loss(tiny_config(loss={"answer_weight": 20.0}), np.zeros_like(marks), logits, tokens)
  assert float(same) == pytest.approx(float(base), rel=1e-6)  # nothing marked: the plain loss
  # by hand: per-target CE and weights (one unit later, as the targets are read)
  tgt, valid = schedule.next_unit_targets(tokens, jnp.ones_like(tokens), L)
  tmarks, _ = schedule.next_unit_targets(jnp.asarray(marks[None]), jnp.ones_like(tokens), L)
  text_t, text_m = (np.asarray(LAYOUT.take_kind(x, "text"))[0] for x in (tgt, tmarks))
  lg = np.asarray(logits["text"][0], np.float64)
  ce = np.log(np.exp(lg).sum(-1)) - lg[np.arange(len(text_t)), text_t]
  for aw, pw, sw in ((20.0, 1.0, 1.0), (1.0, 7.0, 1.0), (4.0, 3.0, 2.0), (1.0, 1.0, 9.0)):
    heavy, m = _loss(tiny_config(loss={"answer_weight": aw, "pause_weight": pw, "stop_weight": sw}), marks,
                     logits, tokens)
    # only the text_out weights change: the weighted sum moves by (w - 1) * CE of each marked target
    extra_w = np.select([np.isin(text_m, (REPLY, ANSWER)), text_m == PAUSE, text_m == STOP], [aw - 1, pw - 1, sw - 1])
    total_w = float((np.asarray(valid)[0] * lay.loss_weight).sum())  # the plain loss' weights
    want = (float(base) * total_w + (extra_w * ce).sum()) / (total_w + extra_w.sum())
    assert float(heavy) == pytest.approx(want, rel=1e-4), (aw, pw, sw)
  assert int(m["tokens/answer"]) == len("red") == int((text_m == ANSWER).sum())
  assert float(m["loss/answer"]) == pytest.approx(ce[text_m == ANSWER].mean(), rel=1e-4)
  assert float(m["loss/reply"]) == pytest.approx(ce[np.isin(text_m, (REPLY, ANSWER))].mean(), rel=1e-4)
  assert float(m["loss/pause"]) == pytest.approx(ce[text_m == PAUSE].mean(), rel=1e-4)
  assert int(m["tokens/pause"]) == (text_m == PAUSE).sum() > 0
  assert float(m["loss/stop"]) == pytest.approx(ce[text_m == STOP].mean(), rel=1e-4)
  assert int(m["tokens/stop"]) == (text_m == STOP).sum() > 0
  assert "loss/answer" not in m_base and float(m_same["tokens/answer"]) == 0


def test_config_keys_and_checks():
  for field in ("answer_weight", "pause_weight", "stop_weight"):
    with pytest.raises(ConfigError, match=rf"loss\.{field}.*>= 1"):
      tiny_config(loss={field: 0.5})
    cfg = tiny_config(loss={field: 10.0})
    assert cfg.loss_marks and batch_keys(cfg)[-1] == "loss_marks"
  assert not CFG.loss_marks and "loss_marks" not in batch_keys(CFG)
  batch = random_token_batch(cfg, 0)
  assert not batch["loss_marks"].any()
  check_batch(cfg, {**batch, "loss_marks": batch["loss_marks"] + STOP})
  with pytest.raises(ValueError, match=r"loss_marks.*codes in \(0, 1, 2, 3, 4\).*\[5\]"):
    check_batch(cfg, {**batch, "loss_marks": batch["loss_marks"] + 5})


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
  ex["text_out"] = _model_text([([1, 2], ["purple", "is"]), ([8, 9, 10], ["I", "see", "purple."])])
  full = text_slots.answer_mask(ex["text_out"], "purple", 10)
  rows = np.flatnonzero(full.any(-1))  # units 10, 11: "purp", "le._"
  cut = np.ones_like(full)
  cut[rows[-1]:] = False  # the answer's last unit outside (e.g. past a window's end)
  np.testing.assert_array_equal(text_slots.answer_mask(ex["text_out"], "purple", 10, valid=cut), full & cut)
  cut[rows[0]:] = False  # none of it valid: the early "purple" is the only run left
  early = text_slots.answer_mask(ex["text_out"], "purple", 10, valid=cut)
  assert early.any() and np.flatnonzero(early.any(-1))[-1] < rows[0]
