"""Voice pools: every English eSpeak variant, whole voices held out, per-utterance randomness, corpus."""

import json

import numpy as np
import pytest

from data_pipelines import speech, voices
from data_pipelines.corpus import CorpusSpec, generate_conversation


def test_every_english_accent_and_variant_is_in_exactly_one_pool():
  acc = voices.accents()
  assert {"en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc"} <= set(acc)
  allv = set(voices.all_variants())
  assert len(allv) >= 100 and {f"klatt{i}" for i in range(2, 7)} | {"klatt", "m1", "f5"} <= allv
  pools = {p: set(voices.variants(p)) for p in voices.POOLS}
  assert pools["train"] | pools["validation"] | pools["test"] == allv
  assert not (pools["train"] & pools["validation"]) and not (pools["train"] & pools["test"])
  assert not (pools["validation"] & pools["test"])
  classic = {v.name.split("+")[1] for v in (speech.MODEL_VOICE,) + speech.USER_VOICES}
  assert classic <= pools["train"]  # the corpus' voices are never held out
  assert not (set(voices.EFFECT_VARIANTS) & (pools["validation"] | pools["test"]))
  assert any(v.startswith("klatt") for v in pools["test"]) and any(v.startswith("klatt") for v in pools["validation"])
  with pytest.raises(ValueError, match="voice pool"):
    voices.variants("dev")


def test_speaker_draws_rate_pitch_range_per_utterance_and_is_seeded():
  a = voices.Speaker.sample(np.random.default_rng(3), "test")
  b = voices.Speaker.sample(np.random.default_rng(3), "test")
  va, vb = [a() for _ in range(6)], [b() for _ in range(6)]
  assert va == vb
  assert len({(v.rate, v.pitch, v.pitch_range) for v in va}) == 6
  assert len({v.name for v in va}) == 1 and a.variant in voices.TEST_VARIANTS
  for v in va:
    assert voices.RATE_RANGE[0] <= v.rate <= voices.RATE_RANGE[1]
    assert voices.PITCH_RANGE[0] <= v.pitch <= voices.PITCH_RANGE[1]


def test_every_accent_speaks_with_a_held_out_klatt_variant():
  synth = speech.get_synthesizer(16000)
  lengths = []
  for accent in voices.accents():
    utt = synth.say("seven blue tables.", speech.Voice(f"{accent}+klatt4", rate=180))
    assert np.isfinite(utt.audio).all() and np.abs(utt.audio).max() > 0.5
    lengths.append(utt.num_samples)
  assert min(lengths) > 0.4 * 16000


def test_corpus_with_a_voice_pool_keeps_the_dialogue_and_changes_the_user():
  classic, pooled = CorpusSpec(), CorpusSpec(user_voices="validation")
  a, b = generate_conversation(classic, "train", 1), generate_conversation(pooled, "train", 1)
  ma, mb = json.loads(a["metadata"]), json.loads(b["metadata"])
  assert [t["text"] for t in ma["turns"]] == [t["text"] for t in mb["turns"]]
  assert mb["user_voice"]["variant"] in voices.VALIDATION_VARIANTS and mb["user_voice"]["pool"] == "validation"
  assert not np.array_equal(a["user_audio"][: 16000 * 2], b["user_audio"][: 16000 * 2]) or a["num_units"] != b["num_units"]
  again = generate_conversation(pooled, "train", 1)
  np.testing.assert_array_equal(again["user_audio"], b["user_audio"])
  with pytest.raises(ValueError, match="user_voices"):
    CorpusSpec(user_voices="everyone")


def test_pool_corpus_builder_has_its_own_name():
  from data_pipelines.synthetic_builder import SyntheticDialoguesConfig
  assert SyntheticDialoguesConfig(size="tiny", spec=CorpusSpec()).name == "tiny_16x16_16000hz_t4_s0"
  assert SyntheticDialoguesConfig(size="tiny", spec=CorpusSpec(user_voices="train")).name.endswith("_vtrain")
