"""Synthetic corpus: determinism, shapes and frame rates, lip sync, answers and timing."""

import json

import numpy as np
import pytest

from data_pipelines import avatar, dialogues, speech, text_slots
from data_pipelines.corpus import CorpusSpec, generate_conversation
from wan_streamer_jax.config import Config, FRAMES_PER_UNIT, TextConfig, VIDEO_FPS

CFG = Config()
SPEC = CorpusSpec.from_config(CFG)
N_CONV = 16


@pytest.fixture(scope="module")
def conversations():
  return [generate_conversation(SPEC, "train", i) for i in range(N_CONV)]


def _meta(ex):
  return json.loads(ex["metadata"])


def test_speech_is_bit_reproducible_across_processes():
  voice = speech.USER_VOICES[2]
  with speech.SpeechSynthesizer(16000) as a, speech.SpeechSynthesizer(16000) as b:
    a.say("something else first, to change the engine state", voice)
    ua, ub = a.say("what is three plus four?", voice), b.say("what is three plus four?", voice)
  assert ua.audio.tobytes() == ub.audio.tobytes()
  assert [w.text for w in ua.words] == ["what", "is", "three", "plus", "four?"]
  starts = [w.start for w in ua.words]
  assert starts == sorted(starts) and all(w.end > w.start for w in ua.words)
  assert ua.audio.dtype == np.float32 and np.abs(ua.audio).max() <= 1.0
  assert 0.5 < ua.duration < 3.0


def test_speech_words_merged_by_espeak_still_get_times():
  with speech.SpeechSynthesizer(16000) as s:
    u = s.say("hello, I am doing well.", speech.MODEL_VOICE)
  assert [w.text for w in u.words] == ["hello,", "I", "am", "doing", "well."]
  assert all(b.start > a.start for a, b in zip(u.words, u.words[1:]))


def test_same_seed_same_bytes(conversations):
  again = generate_conversation(SPEC, "train", 5, synth=speech.SpeechSynthesizer(SPEC.sample_rate))
  ref = conversations[5]
  assert set(again) == set(ref)
  for k in ref:
    assert np.asarray(again[k]).tobytes() == np.asarray(ref[k]).tobytes(), k
  other_seed = generate_conversation(CorpusSpec.from_config(CFG, seed=1), "train", 5)
  assert other_seed["metadata"] != ref["metadata"]


def test_shapes_dtypes_and_frame_rates(conversations):
  spu = CFG.audio.samples_per_unit
  for ex in conversations:
    u = int(ex["num_units"])
    for role in ("user", "model"):
      audio, video, text = ex[f"{role}_audio"], ex[f"{role}_video"], ex[f"{role}_text"]
      assert audio.dtype == np.float32 and audio.shape == (u * spu,)
      assert np.abs(audio).max() <= 1.0
      assert video.dtype == np.uint8 and video.shape == (u * FRAMES_PER_UNIT, CFG.video.height, CFG.video.width, 3)
      assert text.dtype == np.int32 and text.shape == (u, CFG.text.text_slots)
      assert ((text >= 0) & (text < TextConfig.VOCAB_SIZE)).all()
      # 25 fps: frames per second of audio.
      assert video.shape[0] / (audio.shape[0] / CFG.audio.sample_rate) == pytest.approx(VIDEO_FPS)
    assert ex["user_camera_on"].dtype == np.bool_ and ex["user_camera_on"].shape == (u,)
    off = np.repeat(~ex["user_camera_on"], FRAMES_PER_UNIT)
    assert not ex["user_video"][off].any()  # camera-off frames are black
    assert (ex["model_text"] != TextConfig.MISSING).all()  # the model always has its text stream


def test_lip_sync_mouth_follows_model_speech(conversations):
  spf = CFG.audio.samples_per_frame
  for ex in conversations:
    env = speech.frame_envelope(ex["model_audio"], spf)
    mouth = avatar.mouth_opening_from_frames(ex["model_video"])
    corr = np.corrcoef(mouth, env)[0, 1]
    assert corr > 0.8, (ex["conversation_id"], corr)


def test_answers_in_model_text_at_their_units(conversations):
  seen = set()
  for ex in conversations:
    for a in _meta(ex)["answers"]:
      seen.add(a["task"])
      assert a["start_unit"] >= 0, a
      first = a["answer"].split()[0].encode()
      # The answer's first word is queued at the unit where it starts being spoken (lag <= 2 units).
      window = ex["model_text"][a["start_unit"]:a["start_unit"] + 3]
      assert bytes(int(t) for t in window.reshape(-1) if t < 256).find(first) >= 0, (a, window)
      # The whole answer is in the text of the answer turn.
      text = text_slots.decode_slots(ex["model_text"][a["turn_start_unit"]:a["turn_end_unit"] + 4]).lower()
      assert a["answer"].lower() in text, (a, text)
  assert {"arithmetic", "repeat"} <= seen


def test_an_answer_said_as_an_operand_too_is_marked_where_the_result_is_said():
  """ "one times one is one.": the answer's unit is its last "one" (the operands come first)."""
  found = 0
  for i in range(200):
    meta = _meta(generate_conversation(SPEC, "train", i))
    for a in meta["answers"]:
      turn = next(t for t in meta["turns"] if t["answer"] == a["answer"] and t["start_unit"] == a["turn_start_unit"])
      said = [w.strip(".,").lower() for w, _, _ in turn["words"]]
      places = [k for k, w in enumerate(said) if w == a["answer"].split()[0].lower()]
      if a["task"] == "arithmetic" and len(a["answer"].split()) == 1 and len(places) > 1:
        found += 1
        assert a["start_unit"] == turn["words"][places[-1]][1] > turn["words"][places[0]][1], (a, turn["words"])
    if found >= 3:
      break
  assert found >= 3


def test_colour_answer_is_the_colour_in_the_user_video():
  from data_pipelines.scenes import SHAPE_COLOURS
  checked = 0
  for i in range(80):
    ex = generate_conversation(SPEC, "validation", i)
    m = _meta(ex)
    for a in m["answers"]:
      if a["task"] != "colour" or a["answer"] not in SHAPE_COLOURS:
        continue
      frames = ex["user_video"][a["start_unit"] * FRAMES_PER_UNIT:(a["start_unit"] + 1) * FRAMES_PER_UNIT]
      dist = np.abs(frames.astype(int) - np.array(SHAPE_COLOURS[a["answer"]])).sum(-1)
      assert (dist < 40).sum() >= 4, a  # the shape is on screen, in that colour, when the model answers
      checked += 1
    if checked >= 2:
      break
  assert checked >= 1


def test_turn_timing(conversations):
  spu = CFG.audio.samples_per_unit
  kinds = set()
  for ex in conversations:
    m = _meta(ex)
    kinds |= {t["task"] for t in m["tasks"]}
    for t in m["turns"]:
      if t["speaker"] == "model" and t["kind"] == "speech" and t["onset_units"] is not None:
        assert t["onset_units"] == SPEC.reply_onset_units[0] == SPEC.reply_onset_units[1], t
        assert t["start_sample"] % spu == 0  # the model starts on the unit clock
    for rec in m["tasks"]:
      if rec["task"] == "interrupt" and rec["interrupted"]:
        assert 1 <= rec["stop_unit"] - rec["interrupt_unit"] <= 3
        cut = [t for t in m["turns"] if t["interrupted"]][0]
        assert cut["end_unit"] < rec["stop_unit"]
        # Nothing of the cut turn is heard from the stop unit until the model's next turn.
        nxt = min(t["start_sample"] for t in m["turns"] if t["speaker"] == "model"
                  and t["start_sample"] > cut["start_sample"])
        assert np.abs(ex["model_audio"][rec["stop_unit"] * spu:nxt]).max() == 0.0
  assert len(kinds) >= 5, kinds


def test_reply_onset_is_a_corpus_setting():
  spec = CorpusSpec.from_config(CFG, reply_onset_units=(4, 5))
  onsets = set()
  for i in range(3):
    m = _meta(generate_conversation(spec, "train", i))
    onsets |= {t["onset_units"] for t in m["turns"] if t["speaker"] == "model" and t["kind"] == "speech"
               and t["onset_units"] is not None}
  assert onsets and onsets <= {4, 5}, onsets
  with pytest.raises(ValueError, match="reply_onset_units"):
    CorpusSpec(reply_onset_units=(0, 2))


def test_turn_ending_replies_are_takeovers(conversations):
  # Full-Duplex-Bench counts a reply as taking the turn at > 3 words (or >= 1 s): every scripted
  # reply to a user turn must, backchannels must not.
  for ex in conversations:
    for t in _meta(ex)["turns"]:
      if t["speaker"] == "model" and t["kind"] == "speech" and not t["interrupted"]:
        assert len(t["text"].split()) > 3, t["text"]
      if t["kind"] == "backchannel":
        assert len(t["text"].split()) <= 2, t["text"]


def test_text_layout_queue_and_specials():
  events = [text_slots.word_event(1, "seven"), text_slots.word_event(1, "up"),
            text_slots.end_of_turn_event(2)]
  slots, placed = text_slots.layout_text(events, 5, 4)
  P, W, E = TextConfig.PAD, TextConfig.WORD_END, TextConfig.END_OF_TURN
  assert slots[0].tolist() == [P] * 4
  assert slots[1].tolist() == list(b"seve")
  assert slots[2].tolist() == [ord("n"), W, ord("u"), ord("p")]
  assert slots[3].tolist() == [W, E, P, P]
  assert placed[0][2:] == (1, 2)
  assert text_slots.decode_slots(slots) == "seven up |"


def test_number_words():
  assert dialogues.number_words(0) == "zero" and dialogues.number_words(42) == "forty two"
  assert dialogues.number_words(100) == "one hundred" and dialogues.number_words(70) == "seventy"


def test_word_by_word_replies_voice_no_word_before_it_is_due():
  """eSpeak's whole-sentence replies leak what follows into the voice before it (intonation and peak
  normalisation read the whole sentence: the answer, and the template after a shared first word);
  said word by word, the audio up to any word is the same for every reply that shares the words
  before it."""
  replies = ("the shape is red.", "the shape is purple.", "I see a red square.", "I cannot see you, your camera is off.",
             "I do not see any shape.", "I think that is red.")
  with speech.SpeechSynthesizer(16000) as s:
    whole = {t: s.say(t, speech.MODEL_VOICE) for t in replies}
    words = {t: s.say_in_parts(t.split(), speech.MODEL_VOICE) for t in replies}
  n = min(whole[t].words[3].start for t in replies[:2])
  assert not np.array_equal(whole[replies[0]].audio[:n], whole[replies[1]].audio[:n])  # the answer leaks
  n = min(whole[t].words[1].start for t in replies[2:])
  assert len({whole[t].audio[:n].tobytes() for t in replies[2:]}) > 1  # so does the template
  pairs = 0
  for a in replies:  # every word boundary of every pair of replies
    for b in replies:
      ua, ub = words[a], words[b]
      assert ua.text == a and [w.text for w in ua.words] == a.split()
      assert all(y.start >= x.end > x.start for x, y in zip(ua.words, ua.words[1:]))
      shared = 0
      while shared < min(len(ua.words), len(ub.words)) and ua.words[shared].text == ub.words[shared].text:
        shared += 1
      if a != b and shared < min(len(ua.words), len(ub.words)):
        cut = ua.words[shared].start  # where the first different word starts
        assert cut == ub.words[shared].start and np.array_equal(ua.audio[:cut], ub.audio[:cut]), (a, b)
        pairs += shared > 0
  assert pairs >= 10


def test_word_by_word_replies_keep_the_dialogue_and_change_only_the_model_voice():
  from data_pipelines.synthetic_builder import SyntheticDialoguesConfig
  word_spec = CorpusSpec.from_config(CFG, word_by_word_replies=True)
  assert SyntheticDialoguesConfig(size="tiny", spec=word_spec).name.endswith("_words")
  changed = 0
  for i in range(3):
    a, b = generate_conversation(SPEC, "train", i), generate_conversation(word_spec, "train", i)
    ma, mb = _meta(a), _meta(b)
    assert [t["text"] for t in ma["turns"]] == [t["text"] for t in mb["turns"]]  # (word-by-word
    # replies run longer, so later turns move)
    for ans in mb["answers"]:  # the answer is still queued where its voice starts
      first = ans["answer"].split()[0].encode()
      window = b["model_text"][ans["start_unit"]:ans["start_unit"] + 3]
      assert bytes(int(t) for t in window.reshape(-1) if t < 256).find(first) >= 0, ans
    changed += int(bool(mb["answers"]) and not np.array_equal(a["model_audio"], b["model_audio"]))
  assert changed >= 1
