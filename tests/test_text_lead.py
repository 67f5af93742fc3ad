"""text.out_lead_units: the model's text leads its speech by k units in training windows, and is scored
where it is spoken."""

import numpy as np
import pytest

from data_pipelines import text_slots
from data_pipelines.packing import TokenWindow, window_tokens
from data_pipelines.token_data import random_token_example
from tests.helpers import tiny_config
from wan_streamer_jax import schedule
from wan_streamer_jax.config import GROUPS, UNIT_SECONDS, ConfigError, TextConfig
from wan_streamer_jax.evaluation.streams import speech_aligned_text
from wan_streamer_jax.evaluation.timelines import text_stream_words

CFG = tiny_config()
LAYOUT = schedule.unit_layout(CFG)
PAD = TextConfig.PAD


def _stream(events, units=12):
  return text_slots.layout_text([text_slots.word_event(u, w) for u, w in events], units, CFG.text.text_slots)[0]


def _words(stream):
  return [(w.text, round(w.start / UNIT_SECONDS)) for w in text_stream_words(stream)]


def test_lead_moves_every_word_k_units_earlier_and_loses_nothing():
  text = _stream([(3, "hello"), (5, "there."), (9, "ok")])
  led = text_slots.lead_text(text, 2)
  assert _words(text) == [("hello", 3), ("there.", 5), ("ok", 9)]
  assert _words(led) == [("hello", 1), ("there.", 3), ("ok", 7)]
  np.testing.assert_array_equal(text_slots.lead_text(text, 0), text)
  # a word in the first units queues at unit 0 instead of being cut: the same bytes in the same order
  early = text_slots.lead_text(_stream([(0, "hi"), (1, "you")]), 3)
  flat = lambda x: [int(t) for t in x.reshape(-1) if t != PAD]  # noqa: E731
  assert flat(early) == flat(_stream([(0, "hi"), (1, "you")]))


def _example(units=16):
  ex = random_token_example(CFG, units, np.random.default_rng(0))
  ex["text_out"] = _stream([(4, "seven"), (9, "blue.")], units)
  return ex


def _group(tokens, group, units):
  return tokens.reshape(units, LAYOUT.tokens_per_unit)[:, LAYOUT.group == GROUPS.index(group)]


def test_windows_carry_the_led_text_and_nothing_else_moves():
  ex, n = _example(), 16
  plain, led = window_tokens(LAYOUT, ex, 0, n), window_tokens(LAYOUT, ex, 0, n, text_lead=1)
  want = schedule.shift_out_stream(text_slots.lead_text(ex["text_out"], 1), TextConfig.MISSING)
  np.testing.assert_array_equal(_group(led, "text_out", n), want)
  assert not np.array_equal(_group(led, "text_out", n), _group(plain, "text_out", n))
  other = LAYOUT.group != GROUPS.index("text_out")
  np.testing.assert_array_equal(led.reshape(n, -1)[:, other], plain.reshape(n, -1)[:, other])
  # a training window (sink + random run) cuts the same led conversation
  out = TokenWindow(LAYOUT, max_units=8, sink_units=2, text_lead=1).random_map(ex, np.random.default_rng(0))
  ids = out["unit_ids"][::LAYOUT.tokens_per_unit]
  start = int(ids[2])
  np.testing.assert_array_equal(out["tokens"][2 * LAYOUT.tokens_per_unit:], window_tokens(LAYOUT, ex, start, 6, 1))


def test_scored_text_is_moved_back_to_the_speech():
  text = _stream([(4, "seven"), (9, "blue.")])
  outputs = {"text": text_slots.lead_text(text, 2)[:, None], "turn_state": np.arange(12)[:, None],
             "audio": np.zeros((12, 1, 4), np.float32)}
  back = speech_aligned_text(outputs, 2)
  np.testing.assert_array_equal(back["text"][:, 0], text)
  np.testing.assert_array_equal(back["turn_state"][:, 0], [0, 0] + list(range(10)))
  assert back["audio"] is outputs["audio"] and speech_aligned_text(outputs, 0) is outputs


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_lead_is_refused_by_name(bad):
  with pytest.raises(ConfigError, match=r"text\.out_lead_units.*int >= 0"):
    tiny_config(text={"out_lead_units": bad})
