"""Audio codec quality beside Codec2: `python -m launch.bench --what=codec_quality --audio_codec=RUN_DIR`.

Encodes the same utterances with our trained audio codec (offline encode -> decode of a
`launch.train_codec` run directory) and with Codec2 at 1200 and 3200 bps (`codecs.codec2`:
8 kHz, resampled, its fixed delay removed), and scores each against the input at the
codec's sample rate. Three utterance sets, `utterances` each (two sentences of
`SENTENCES`, none of them in the dialogue corpus, ~3-6 s):

  in_domain          the corpus' classic voices (`speech.MODEL_VOICE`, `speech.USER_VOICES`)
  validation_voices  `voices.VALIDATION_VARIANTS` (any accent, random rate/pitch/range)
  test_voices        `voices.TEST_VARIANTS`: never trained on, never used to choose a setting

Figures per set and codec (means over utterances): stoi, pesq_nb, pesq_wb,
log_mel_distance (0-8 kHz: a 4 kHz codec is charged for the missing band), si_snr_db; plus
bitrate_bps, Codec2's delay in samples, and, per set, `ours_minus_codec2_1200` for STOI and
PESQ-NB and `stoi_bands` (STOI per third-octave band, 150 Hz - 3.8 kHz, for each codec:
`metrics.stoi_bands`; says in which formant region a codec loses). Utterances are deterministic
(seeded); the synthesizer's output is bit-stable.
`oracle` (per set) says which half of our decoder's output costs the figures: our output's STFT
magnitude resynthesised with the reference's phase, and the reference's magnitude with our phase
(`swap_stft_parts`, at the decoder's own iSTFT resolution: n_fft = strides[0] * fft_overlap, hop
strides[0]); each scored as above.
`spectrogram_png` (`launch.bench --png=`) also draws each set's first utterance: reference, ours and
both Codec2 modes side by side.
"""

from __future__ import annotations

import time

import numpy as np

from wan_streamer_jax.config import Config

SENTENCES = (
    "the old clock on the wall stopped at noon.", "please bring the green umbrella when you come.",
    "a quick breakfast is better than no breakfast at all.", "the children ran across the wet field.",
    "we should leave before the traffic gets worse.", "my brother fixed the bicycle with a spoon.",
    "the library closes early on sundays.", "she painted the fence a bright shade of yellow.",
    "turn left at the bakery and keep walking.", "the soup needs a little more salt and pepper.",
    "he forgot his keys in the taxi again.", "the train to the coast leaves every hour.",
    "listen carefully to the sound of the waves.", "a small dog barked at the passing truck.",
    "the meeting was moved to thursday afternoon.", "could you speak a little louder please?",
    "the museum has a new exhibit about ancient ships.", "our neighbours grow tomatoes on the roof.",
    "the pilot announced a short delay.", "i would like a cup of tea with lemon.",
    "the storm knocked down two large trees.", "they counted the coins on the kitchen table.",
    "my phone battery is almost empty.", "the teacher wrote the answer on the board.",
)
CODEC2_MODES = (1200, 3200)
SETS = ("in_domain", "validation_voices", "test_voices")


def utterance_set(name: str, count: int, sample_rate: int, seed: int = 0) -> list[np.ndarray]:
  """`count` utterances `[T]` float32 (T a multiple of 640 at 16 kHz: whole 40 ms frames)."""
  from data_pipelines import speech, voices
  if name not in SETS:
    raise ValueError(f"utterance set: expected one of {SETS}, got {name!r}")
  rng = np.random.default_rng(np.random.SeedSequence([seed, SETS.index(name)]))
  synth = speech.get_synthesizer(sample_rate)
  spf = sample_rate // 25
  classic = (speech.MODEL_VOICE,) + speech.USER_VOICES
  out = []
  for _ in range(count):
    i, j = rng.choice(len(SENTENCES), 2, replace=False)
    text = f"{SENTENCES[i]} {SENTENCES[j]}"
    if name == "in_domain":
      voice = classic[int(rng.integers(len(classic)))]
    else:
      voice = voices.Speaker.sample(rng, "validation" if name == "validation_voices" else "test").next_voice()
    audio = synth.say(text, voice).audio
    padded = np.zeros(-(-audio.shape[0] // spf) * spf, np.float32)
    padded[: audio.shape[0]] = audio
    out.append(padded)
  return out


def _mean_scores(recs, refs, sample_rate: int) -> dict:
  from wan_streamer_jax.codecs import metrics
  rows = [metrics.speech_scores(r, x, sample_rate) for r, x in zip(recs, refs)]
  return {k: round(float(np.nanmean([row[k] for row in rows])), 4) for k in rows[0]}


def _mean_stoi_bands(recs, refs, sample_rate: int) -> list[float]:
  from wan_streamer_jax.codecs import metrics
  return [round(float(v), 4) for v in np.nanmean([metrics.stoi_bands(r, x, sample_rate)[1]
                                                  for r, x in zip(recs, refs)], axis=0)]


def _our_roundtrip(codec, refs: list[np.ndarray], batch: int = 8) -> list[np.ndarray]:
  """Offline encode -> decode, batched: zero-padded to the longest utterance (the codec is causal,
  so padding after an utterance's end never changes its samples), one compile per set."""
  import jax.numpy as jnp
  step = 2 * codec.cfg.sample_rate  # round up to 2 s: the sets share one compiled shape
  longest = -(-max(x.shape[0] for x in refs) // step) * step
  batch = min(batch, len(refs))
  out = []
  for i in range(0, len(refs), batch):
    group = refs[i:i + batch]
    x = np.zeros((batch, longest), np.float32)
    for j, r in enumerate(group):
      x[j, : r.shape[0]] = r
    y = np.asarray(codec.decode(codec.encode(jnp.asarray(x))))
    out += [y[j, : r.shape[0]] for j, r in enumerate(group)]
  return out


def swap_stft_parts(a: np.ndarray, b: np.ndarray, n_fft: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
  """Two `[T]` float32 signals from two `[T]` ones: `a`'s STFT magnitude with `b`'s phase, and `b`'s
  magnitude with `a`'s phase, each resynthesised (periodic Hann, `hop`, least-squares overlap-add).
  Swapping a signal with itself returns it."""
  from scipy import signal
  spec_a, spec_b = (signal.stft(x, nperseg=n_fft, noverlap=n_fft - hop, boundary="zeros", padded=True)[2]
                    for x in (a, b))
  def resynth(mag, phase):
    y = signal.istft(mag * np.exp(1j * phase), nperseg=n_fft, noverlap=n_fft - hop, boundary=True)[1]
    return np.pad(y, (0, max(0, a.size - y.size)))[: a.size].astype(np.float32)
  return (resynth(np.abs(spec_a), np.angle(spec_b)), resynth(np.abs(spec_b), np.angle(spec_a)))


def write_spectrograms(path: str, rows: dict[str, dict[str, np.ndarray]], sample_rate: int,
                       seconds: float = 3.0) -> str:
  """PNG of log-magnitude spectrograms (0-5 kHz, 32 ms Hann, 8 ms hop): one row per set, one column per
  signal (`rows[set][signal]`, `[T]` float32), each titled with its STOI against the set's reference."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from wan_streamer_jax.codecs import metrics
  n_fft, hop = sample_rate // 31, sample_rate // 125
  names = list(next(iter(rows.values())))
  fig, axes = plt.subplots(len(rows), len(names), figsize=(4.2 * len(names), 2.6 * len(rows)), squeeze=False)
  for r, (set_name, signals) in enumerate(rows.items()):
    ref = signals["reference"]
    for c, name in enumerate(names):
      y = signals[name][: int(seconds * sample_rate)]
      frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop] * np.hanning(n_fft)
      db = 20 * np.log10(np.abs(np.fft.rfft(frames, axis=-1)).T + 1e-5)
      top = int(5000 / (sample_rate / 2) * db.shape[0])
      ax = axes[r, c]
      ax.imshow(db[:top], origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                extent=(0, y.size / sample_rate, 0, 5.0))
      ax.set_title(f"{set_name}: {name}  STOI {metrics.stoi(signals[name], ref, sample_rate):.3f}", fontsize=8)
      ax.set_xlabel("s", fontsize=7)
      ax.set_ylabel("kHz", fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def run(cfg: Config, audio_codec: str | None = None, utterances: int = 12, sets: tuple[str, ...] = SETS,
        spectrogram_png: str | None = None) -> dict:
  from wan_streamer_jax.codecs import codec2, metrics, training
  if not audio_codec:
    raise ValueError("codec_quality: expected --audio_codec=<launch.train_codec run directory> (a trained "
                     "codec; random weights would score nothing)")
  if not sets or set(sets) - set(SETS) or "in_domain" not in sets:
    raise ValueError(f"codec_quality sets: expected a subset of {SETS} with in_domain (Codec2's delay is "
                     f"measured on it), got {sets!r}")
  if not codec2.available():
    raise RuntimeError("codec_quality needs Codec2's c2enc/c2dec (apt-get install -y codec2)")
  del cfg  # the codec's own config comes from its checkpoint
  codec, kind, step = training.load_codec(audio_codec)
  if kind != "audio":
    raise ValueError(f"codec_quality: {audio_codec} holds a {kind} codec, expected an audio codec")
  sr = codec.cfg.sample_rate
  t0 = time.perf_counter()
  sets = {name: utterance_set(name, utterances, sr) for name in sets}
  refs_c2 = {m: codec2.Codec2(m) for m in CODEC2_MODES}
  delays = {m: c.fixed_delay(sets["in_domain"][:8], sr) for m, c in refs_c2.items()}
  result = {"audio_codec": audio_codec, "codec_steps": step, "sample_rate": sr, "utterances_per_set": utterances,
            "ours_bitrate_bps": round(codec.cfg.bitrate_bps, 1),
            "codec2_delay_samples": {str(m): d for m, d in delays.items()},
            "seconds_per_set": {n: round(float(sum(u.size for u in s) / sr), 1) for n, s in sets.items()}}
  first = {}
  n_fft, hop = codec.cfg.strides[0] * codec.cfg.fft_overlap, codec.cfg.strides[0]  # the decoder's iSTFT grid
  for name, refs in sets.items():
    ours = _our_roundtrip(codec, refs)
    entry = {"ours": _mean_scores(ours, refs, sr)}
    swaps = [swap_stft_parts(y, x, n_fft, hop) for y, x in zip(ours, refs)]
    entry["oracle"] = {"ours_magnitude_reference_phase": _mean_scores([s[0] for s in swaps], refs, sr),
                       "reference_magnitude_ours_phase": _mean_scores([s[1] for s in swaps], refs, sr)}
    bands = {"centre_hz": [round(c) for c in metrics.stoi_band_centres_hz()],
             "ours": _mean_stoi_bands(ours, refs, sr)}
    first[name] = {"reference": refs[0], "ours": ours[0]}
    for m, c in refs_c2.items():
      decoded = [c.roundtrip(x, sr, delay=delays[m]) for x in refs]
      entry[f"codec2_{m}"] = _mean_scores(decoded, refs, sr)
      bands[f"codec2_{m}"] = _mean_stoi_bands(decoded, refs, sr)
      first[name][f"codec2_{m}"] = decoded[0]
    entry["stoi_bands"] = bands
    entry["ours_minus_codec2_1200"] = {k: round(entry["ours"][k] - entry["codec2_1200"][k], 4)
                                       for k in ("stoi", "pesq_nb")}
    result[name] = entry
  result["seconds"] = round(time.perf_counter() - t0, 1)
  if spectrogram_png:
    result["spectrogram_png"] = write_spectrograms(spectrogram_png, first, sr)
  return result
