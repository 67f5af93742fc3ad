"""The timeline PNG of one evaluated dialogue (matplotlib, Agg).

Four lanes over the dialogue's seconds: the user's speech (RMS envelope, its
scripted turns shaded, typed turns hatched), the model's speech (envelope, the
detected speech segments shaded; dotted: the speech threshold), the model's text stream (each word at its
start), and the model's turn state per unit (silent / speaking / yielded).
Scored events are drawn across all lanes: turn ends (green), the user's pauses
(orange spans) and interruptions (red).
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wan_streamer_jax.config import UNIT_SECONDS  # noqa: E402
from wan_streamer_jax.evaluation.dialogue_score import audio_timeline  # noqa: E402
from wan_streamer_jax.evaluation.events import events_from_metadata  # noqa: E402
from wan_streamer_jax.evaluation.settings import EvalSettings  # noqa: E402
from wan_streamer_jax.evaluation.streams import ModelStreams  # noqa: E402
from wan_streamer_jax.evaluation.timelines import FRAME_S  # noqa: E402


def _envelope(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  spf = int(round(sample_rate * FRAME_S))
  n = audio.shape[0] // spf
  env = np.sqrt(np.mean(np.asarray(audio[:n * spf], np.float32).reshape(n, spf) ** 2, axis=1))
  return np.arange(n) * FRAME_S, env


def _printable(word: str, max_chars: int = 14) -> str:
  """A word as drawn: control and undrawable characters as '?', long words cut (an untrained model's bytes)."""
  text = "".join(c if c.isprintable() and ord(c) < 0x2500 else "?" for c in word)
  return text if len(text) <= max_chars else text[:max_chars - 1] + "~"


def timeline_figure(example: dict, model: ModelStreams, sample_rate: int, settings: EvalSettings = EvalSettings(),
                    title: str = "") -> plt.Figure:
  """The figure for a corpus example (the user's script) and the model's streams of that dialogue."""
  meta_s = example["metadata"]
  meta = json.loads(meta_s.decode() if isinstance(meta_s, bytes) else meta_s)
  units = int(example["num_units"])
  duration = units * UNIT_SECONDS
  events = events_from_metadata(meta, duration)
  fig, axes = plt.subplots(4, 1, figsize=(max(8.0, min(40.0, duration * 0.9)), 6.5), sharex=True,
                           gridspec_kw={"height_ratios": [1.2, 1.2, 1.0, 0.7]})
  ax_u, ax_m, ax_t, ax_s = axes
  t, env = _envelope(np.asarray(example["user_audio"]), sample_rate)
  ax_u.plot(t, env, color="tab:green", lw=0.8)
  for turn in meta["turns"]:
    if turn["speaker"] == "user":
      a, b = turn["start_sample"] / sample_rate, turn["end_sample"] / sample_rate
      ax_u.axvspan(a, b, color="tab:green", alpha=0.15, hatch="//" if turn["kind"] == "typed" else None)
  ax_u.set_ylabel("user\nspeech")
  t, env = _envelope(model.audio, sample_rate)
  ax_m.plot(t, env, color="tab:blue", lw=0.8)
  tl = audio_timeline(model.audio, model.text, sample_rate, settings)
  for a, b in tl.segments():
    ax_m.axvspan(a, b, color="tab:blue", alpha=0.15)
  ax_m.set_ylabel("model\nspeech")
  for ax, e in ((ax_u, ax_u.get_lines()[0].get_ydata()), (ax_m, env)):
    ax.axhline(settings.speech_rms, color="grey", lw=0.6, ls=":")  # what counts as speech
    ax.set_ylim(0, max(0.1, float(np.max(e, initial=0.0)) * 1.05))  # silence is drawn as silence
  for i, w in enumerate(tl.words):
    ax_t.text(w.start, 0.15 + 0.6 * (i % 3) / 2, _printable(w.text), fontsize=7, color="navy", clip_on=True)
  ax_t.set_ylim(0, 1)
  ax_t.set_yticks([])
  ax_t.set_ylabel("model\ntext")
  ax_s.step(np.arange(units) * UNIT_SECONDS, model.turn_state, where="post", color="k", lw=1)
  ax_s.set_yticks([0, 1, 2], ["silent", "speaking", "yielded"], fontsize=7)
  ax_s.set_ylim(-0.3, 2.3)
  ax_s.set_xlabel("seconds")
  for ax in axes:
    for e in events.turn_ends:
      ax.axvline(e.time, color="tab:green", lw=1, ls="--")
    for p in events.pauses:
      ax.axvspan(p.start, p.end, color="tab:orange", alpha=0.12)
    for i in events.interruptions:
      ax.axvline(i.start, color="tab:red", lw=1.2)
  ax_s.set_xlim(0, duration)
  fig.suptitle(title + "   green --: user turn end, orange: user pause, red: user barges in", fontsize=9)
  fig.tight_layout()
  return fig


def close_all() -> None:
  plt.close("all")
