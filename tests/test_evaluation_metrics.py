"""Behaviour metrics on hand-built timelines with known answers (DESIGN §8)."""

import json

import numpy as np
import pytest

from data_pipelines import avatar, text_slots
from data_pipelines.corpus import CorpusSpec, generate_conversation
from wan_streamer_jax.config import UNIT_SECONDS, Config
from wan_streamer_jax.evaluation import answers, events as ev, lip_sync, turn_taking
from wan_streamer_jax.evaluation.dialogue_score import audio_timeline
from wan_streamer_jax.evaluation.settings import EvalSettings
from wan_streamer_jax.evaluation.timelines import FRAME_S, SideTimeline, Word, text_stream_words

SR, SPU = 16000, 2560
S = EvalSettings()
DURATION = 20.0
FRAMES = int(DURATION / FRAME_S)


def _events(pauses=(), turn_ends=(), interruptions=()):
  return ev.DialogueEvents(DURATION, tuple(pauses), tuple(turn_ends), tuple(interruptions), ())


def _side(spans=(), words=()):
  speech = np.zeros(FRAMES, bool)
  for a, b in spans:
    speech[int(round(a / FRAME_S)):int(round(b / FRAME_S))] = True
  return SideTimeline(speech, tuple(Word(w, s, e) for w, s, e in words))


PAUSES = [ev.Pause(2.0, 2.8, 4.5, "backchannel"), ev.Pause(6.0, 6.5, 8.0, "backchannel")]
ENDS = [ev.TurnEnd(3.0, 6.0, "arithmetic", False, (3.32, 4.5)), ev.TurnEnd(10.0, 14.0, "colour", False, None)]
ALWAYS = _side([(0.0, DURATION)], [(f"w{i}", 0.3 * i, 0.3 * i + 0.25) for i in range(int(DURATION / 0.3))])
NEVER = _side()


def test_always_talking_model_takes_over_every_pause():
  s = turn_taking.summarise([turn_taking.score_events(ALWAYS, _events(PAUSES, ENDS), S)])
  assert s["pause_handling"] == {"n": 2, "takeover_rate": 1.0}
  assert s["backchannel"]["per_second"] == 0.0  # one long segment is not a backchannel
  assert s["turn_taking"]["takeover_rate"] == 1.0 and s["turn_taking"]["median_latency_s"] == 0.0


def test_never_talking_model_takes_no_turn():
  s = turn_taking.summarise([turn_taking.score_events(NEVER, _events(PAUSES, ENDS), S)])
  assert s["turn_taking"]["takeover_rate"] == 0.0
  assert s["turn_taking"]["median_latency_s"] is None
  assert s["pause_handling"]["takeover_rate"] == 0.0


def test_takeover_thresholds_words_and_seconds():
  four = _side([(1.0, 1.5)], [(f"w{i}", 1.0 + 0.1 * i, 1.1 + 0.1 * i) for i in range(4)])
  three = _side([(1.0, 1.5)], [(f"w{i}", 1.0 + 0.1 * i, 1.1 + 0.1 * i) for i in range(3)])
  long_hum = _side([(1.0, 2.0)])
  assert turn_taking.is_takeover(four, 0.5, 3.0, S)  # > 3 words
  assert not turn_taking.is_takeover(three, 0.5, 3.0, S)  # 3 words, 0.5 s
  assert turn_taking.is_takeover(long_hum, 0.5, 3.0, S)  # >= 1 s of speech, no words
  assert not turn_taking.is_takeover(long_hum, 1.5, 3.0, S)  # only 0.5 s of it inside the window


def test_backchannel_in_pause_is_counted_and_not_a_takeover():
  mhm = _side([(2.2, 2.6)], [("mhm.", 2.24, 2.56)])
  r = turn_taking.score_events(mhm, _events(PAUSES[:1]), S)
  assert r["pauses"][0] == {"start_s": 2.0, "pause_s": pytest.approx(0.8), "takeover": False, "backchannels": 1}
  s = turn_taking.summarise([r])
  assert s["backchannel"]["per_second"] == pytest.approx(1 / 0.8)


def test_interruption_stop_latency_and_takeover_after():
  barge = ev.Interruption(start=5.0, end=6.0, window_end=12.0, reference_stop=5.32)
  keeps = _side([(3.0, 5.4), (6.5, 8.0)], [("okay,", 6.5, 6.8), ("please", 6.8, 7.1), ("go", 7.1, 7.4),
                                             ("ahead.", 7.4, 7.9)])
  r = turn_taking.score_events(keeps, _events(interruptions=[barge]), S)["interruptions"][0]
  assert r["talking_at_barge_in"] and r["stop_latency_s"] == pytest.approx(0.4)
  assert r["takeover_after"] and r["latency_after_s"] == pytest.approx(0.5)
  r = turn_taking.score_events(NEVER, _events(interruptions=[barge]), S)["interruptions"][0]
  assert not r["talking_at_barge_in"] and r["stop_latency_s"] == 0.0 and not r["takeover_after"]


def _reply_two_units_after(user_end: float):
  """Model audio + text of a reply whose first unit is 2 units after the unit holding `user_end`."""
  units = 40
  start_unit = int(user_end // UNIT_SECONDS) + 2
  audio = np.zeros(units * SPU, np.float32)
  rng = np.random.default_rng(0)
  audio[start_unit * SPU:(start_unit + 8) * SPU] = 0.2 * rng.standard_normal(8 * SPU).astype(np.float32)
  events = [text_slots.word_event(start_unit + 2 * i, w) for i, w in enumerate("the answer is seven".split())]
  text, _ = text_slots.layout_text(events, units, 4)
  return audio, text


@pytest.mark.parametrize("user_end", [1.13, 1.2, 1.279])
def test_reply_two_units_after_the_user_has_latency_0_32s(user_end):
  audio, text = _reply_two_units_after(user_end)
  model = audio_timeline(audio, text, SR, S)
  end = ev.TurnEnd(user_end, 5.0, "arithmetic", False, None)
  r = turn_taking.score_events(model, ev.DialogueEvents(6.4, (), (end,), (), ()), S)["turn_ends"][0]
  assert r["takeover"]
  assert abs(r["latency_s"] - 0.32) <= UNIT_SECONDS + 1e-9, r
  assert abs(r["speech_latency_s"] - 0.32) <= UNIT_SECONDS + 1e-9, r


def test_text_stream_words_follow_word_end():
  events = [text_slots.word_event(3, "seven"), text_slots.word_event(3, "up"), text_slots.end_of_turn_event(5)]
  slots, _ = text_slots.layout_text(events, 8, 4)
  words = text_stream_words(slots)
  assert [w.text for w in words] == ["seven", "up"]
  assert words[0].start == pytest.approx(3 * UNIT_SECONDS) and words[0].end == pytest.approx(5 * UNIT_SECONDS)
  assert words[1].start == pytest.approx(4 * UNIT_SECONDS)  # "seven" + WORD_END fill units 3-4


def _talking_avatar(frames: int, delay: int):
  rng = np.random.default_rng(1)
  env = np.clip(np.convolve(rng.random(frames + 40), np.ones(3) / 3, "same")[20:20 + frames], 0, 1) * 0.2
  env[rng.random(frames) < 0.3] = 0.0  # pauses
  audio = (np.repeat(env, SPU // 4) * np.sign(rng.standard_normal(frames * SPU // 4))).astype(np.float32)
  mouth = avatar.mouth_opening(env)
  delayed = np.concatenate([np.zeros(max(delay, 0)), mouth])[:frames] if delay >= 0 else \
      np.concatenate([mouth[-delay:], np.zeros(-delay)])
  video = avatar.render_avatar(delayed, np.ones(frames, np.float32), 32, 32)
  return video, audio


@pytest.mark.parametrize("delay", [-2, 0, 3, 7])
def test_avatar_delayed_by_k_frames_has_lip_sync_offset_k(delay):
  video, audio = _talking_avatar(200, delay)
  r = lip_sync.avatar_lip_sync(video, audio, SPU, max_lag=15)
  assert r["best_lag"] == delay, r["best_lag"]
  assert r["peak"] > 0.8 and r["confidence"] > 0.3


def test_lip_sync_of_a_still_face_is_undefined():
  video = avatar.render_avatar(np.zeros(100, np.float32), np.ones(100, np.float32), 32, 32)
  r = lip_sync.avatar_lip_sync(video, np.zeros(100 * SPU // 4, np.float32), SPU)
  assert r["best_lag"] is None and r["peak"] is None
  with pytest.raises(ValueError, match="too short"):
    lip_sync.lagged_correlation(np.ones(10), np.ones(10), 15)


def test_answer_matching_and_chance_rates():
  assert answers.contains_answer(["I", "think", "it", "is", "Seven."], "seven")
  assert answers.contains_answer(["you", "said", "purple", "monkey."], "purple monkey")
  assert not answers.contains_answer(["purple", "is", "monkey"], "purple monkey")
  assert not answers.contains_answer(["seventy"], "seven")
  for task in answers.ANSWER_TASKS:
    dist = answers.answer_distribution(task)
    assert sum(dist.values()) == pytest.approx(1.0)
  assert answers.chance_rates("repeat") == pytest.approx({"guess": 0.1, "majority": 0.1})
  c = answers.chance_rates("colour")
  assert c["majority"] == pytest.approx(CorpusSpec.camera_off_prob)  # "your camera is off" is the commonest
  a = answers.chance_rates("arithmetic")
  assert 0 < a["guess"] < a["majority"] < 0.2
  with pytest.raises(ValueError, match="task must be one of"):
    answers.answer_distribution("greeting")


def test_events_from_corpus_metadata():
  spec = CorpusSpec.from_config(Config())
  seen = {"pauses": 0, "turn_ends": 0, "interruptions": 0, "answers": 0}
  for i in range(12):
    ex = generate_conversation(spec, "test", i)
    meta = json.loads(ex["metadata"])
    e = ev.events_from_metadata(meta, int(ex["num_units"]) * UNIT_SECONDS)
    n_int = sum(1 for r in meta["tasks"] if r["task"] == "interrupt" and r["interrupted"])
    assert len(e.interruptions) == n_int
    assert len(e.answers) == len(meta["answers"])
    for t in e.turn_ends:
      assert t.time < t.reference_reply[0] < t.window_end  # the scripted reply lies in its window
    for p in e.pauses:
      assert p.task == "backchannel" and p.start < p.end < p.window_end
    for k in seen:
      seen[k] += len(getattr(e, k))
  assert all(v > 0 for v in seen.values()), seen
  with pytest.raises(ValueError, match="turns"):
    ev.events_from_metadata({"answers": []}, 1.0)


def test_speech_judge_hears_the_corpus_answers():
  from data_pipelines import speech
  from wan_streamer_jax.evaluation.recognizer import SpeechJudge
  judge = SpeechJudge(SR)
  synth = speech.get_synthesizer(SR)
  said = synth.say("the answer is seven.", speech.MODEL_VOICE).audio
  assert answers.contains_answer(judge.transcribe(said, "arithmetic"), "seven")
  said = synth.say("I see a green circle.", speech.MODEL_VOICE).audio
  heard = judge.transcribe(said, "colour")
  assert answers.contains_answer(heard, "green") and not answers.contains_answer(heard, "red")
  with pytest.raises(ValueError, match="task must be one of"):
    judge.transcribe(said, "greeting")


def test_settings_validate():
  with pytest.raises(ValueError, match="takeover_max_words"):
    EvalSettings(takeover_max_words=-1)


def test_reference_turn_state_follows_the_engine_rule():
  from wan_streamer_jax.evaluation.streams import reference_turn_state
  events = [text_slots.word_event(2, "hi"), text_slots.end_of_turn_event(4), text_slots.word_event(6, "ok")]
  slots, _ = text_slots.layout_text(events, 8, 4)
  assert reference_turn_state(slots).tolist() == [0, 0, 1, 1, 2, 0, 1, 1]


def test_audio_windows_keep_their_offset_at_the_edges():
  from wan_streamer_jax.evaluation.dialogue_score import _clip
  audio = np.arange(1, 11, dtype=np.float32)
  assert _clip(audio, -0.2, 0.5, 10).tolist() == [0, 0, 1, 2, 3]
  assert _clip(audio, 0.8, 0.4, 10).tolist() == [9, 10, 0, 0]
