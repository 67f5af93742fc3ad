"""Codec training pieces: model creation, loss, sharded jitted train step, evaluation.

Used by `codecs.train_task` (the codec half of the training loop). `kind` is
"audio" or "video" (`cfg.codec_train.kind`). Batches are the
data pipeline's raw windows (`data_pipelines.pipelines.raw_pipeline`):
audio float32 `[B, N * samples_per_unit]`, video uint8 `[B, N * 4, H, W, 3]`.
Parameters are replicated over the mesh (the codecs are small); the batch is
sharded over `(data, fsdp)`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from wan_streamer_jax.codecs import losses, metrics
from wan_streamer_jax.codecs.harmonic import f0_loss
from wan_streamer_jax.codecs.pitch import yin_f0
from wan_streamer_jax.codecs.audio_codec import SPEECH_RMS, AudioCodec
from wan_streamer_jax.codecs.video_codec import VideoCodec, frames_to_float
from wan_streamer_jax.config import Config, ConfigError

KINDS = ("audio", "video")
BATCH_AXES = ("data", "fsdp")


def codec_kind(cfg: Config, kind: str | None = None) -> str:
  """The codec a run trains: `kind` if given, else `cfg.codec_train.kind` (a ConfigError if neither)."""
  kind = kind or cfg.codec_train.kind
  if kind not in KINDS:
    raise ConfigError(f"config {cfg.name!r}: set codec_train.kind to audio or video (--config.codec_train.kind=audio), "
                      f"got {kind!r}")
  return kind


def codec_config(cfg: Config, kind: str):
  if kind not in KINDS:
    raise ValueError(f"codec kind: expected audio|video, got {kind!r}")
  return cfg.audio if kind == "audio" else cfg.video


def create_codec(cfg: Config, kind: str, seed: int = 0):
  cls = AudioCodec if kind == "audio" else VideoCodec
  return cls(codec_config(cfg, kind), rngs=nnx.Rngs(seed))


def _perplexity(codes: jax.Array, size: int) -> jax.Array:
  """codes `[..., Q]` -> `[Q]` exp(entropy) of the batch's code histogram."""
  flat = codes.reshape(-1, codes.shape[-1])
  p = jnp.mean(jax.nn.one_hot(flat, size, dtype=jnp.float32), axis=0)  # [Q, size]
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-12)), 0.0), axis=-1))


def _with_entropy(loss: jax.Array, entropy: jax.Array, weight: float) -> tuple[jax.Array, dict]:
  """loss + weight * mean(1 - entropy) (`entropy` `[Q]` in [0, 1]); the entropies as metrics."""
  if weight:
    loss = loss + weight * jnp.mean(1.0 - entropy)
  return loss, {f"code_entropy/q{i}": entropy[i] for i in range(entropy.shape[0])}


def audio_objective(cfg: Config) -> Callable[[Any, dict], tuple[jax.Array, dict, jax.Array]]:
  """`(model, batch) -> (loss, metrics, recon)`: the audio codec's non-adversarial loss and its
  reconstruction `[B, T]` (what a discriminator judges)."""
  a, w = cfg.audio, cfg.codec_train
  if w.f0_weight and not a.harmonics:
    raise ConfigError(f"config {cfg.name!r}: codec_train.f0_weight={w.f0_weight} needs a harmonic head "
                      f"(audio.harmonics > 0), got audio.harmonics={a.harmonics}")

  def f(model, batch):
    x = batch["audio"]
    out = model(x, with_entropy=True)
    loss, parts = losses.audio_loss(out["recon"], x, sample_rate=a.sample_rate, l1=w.l1_weight,
                                    stft=w.stft_weight, mel=w.mel_weight, log_floor=w.log_floor,
                                    stft_high_weight=w.stft_high_weight, mel_high_weight=w.mel_high_weight,
                                    phase=w.phase_weight, phase_fft=(a.strides[0] * a.fft_overlap, a.strides[0]))
    if out["log_f0"] is not None:  # the F0 error is reported whenever there is a head to read it from
      f0, voiced = yin_f0(x, a.sample_rate, a.strides[0])
      parts["f0_octaves"] = f0_loss(out["log_f0"], f0, voiced)
      parts["voiced_fraction"] = jnp.mean(voiced.astype(jnp.float32))
      loss = loss + w.f0_weight * parts["f0_octaves"]
    loss, ent = _with_entropy(loss, out["code_entropy"], w.entropy_weight)
    ppl = _perplexity(out["codes"], a.codebook_size)
    return loss, {"loss": loss, **parts, **ent, **{f"perplexity/q{i}": ppl[i] for i in range(a.num_quantizers)}}, \
        out["recon"]
  return f


def loss_fn(kind: str, cfg: Config) -> Callable[[Any, dict], tuple[jax.Array, dict]]:
  """`(model, batch) -> (loss, metrics)` for one codec kind (without the adversarial terms)."""
  if kind == "audio":
    objective = audio_objective(cfg)

    def f(model, batch):
      return objective(model, batch)[:2]
    return f

  v, w = cfg.video, cfg.codec_train

  def g(model, batch):
    x = frames_to_float(batch["video"])
    out = model(x, with_entropy=True)
    loss, parts = losses.video_loss(out["recon"], x, l1=w.l1_weight, l2=w.l2_weight, ssim_weight=w.ssim_weight,
                                      contrast_weight=w.contrast_weight)
    loss, ent = _with_entropy(loss, out["code_entropy"], w.entropy_weight)
    mse255 = jnp.mean(((out["recon"] - x) * 127.5) ** 2)
    return loss, {"loss": loss, **parts, **ent, "psnr": 10 * jnp.log10(255.0 ** 2 / jnp.maximum(mse255, 1e-10)),
                  "perplexity/q0": _perplexity(out["codes"][..., None], v.codebook_size)[0]}
  return g


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def make_train_step(kind: str, cfg: Config, graphdef, tx: optax.GradientTransformation, mesh,
                    params_abstract, opt_abstract):
  """Jitted `(params, opt_state, batch) -> (params, opt_state, metrics)` with explicit shardings."""
  lf = loss_fn(kind, cfg)
  rep = replicated(mesh)
  p_sh = jax.tree.map(lambda _: rep, params_abstract)
  o_sh = jax.tree.map(lambda _: rep, opt_abstract)
  key = "audio" if kind == "audio" else "video"

  def step(params, opt_state, batch):
    def objective(p):
      return lf(nnx.merge(graphdef, p), batch)
    (_, m), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    m["grad_norm"] = optax.tree.norm(grads)
    return params, opt_state, m

  return jax.jit(step, in_shardings=(p_sh, o_sh, {key: batch_sharding(mesh)}),
                 out_shardings=(p_sh, o_sh, rep), donate_argnums=(0, 1))


def speech_activity(audio: np.ndarray, sample_rate: int, threshold: float = SPEECH_RMS) -> np.ndarray:
  """`[B, T]` -> `[B]` fraction of 40 ms frames with RMS > threshold (speech, not mic noise)."""
  spf = sample_rate // 25
  frames = np.asarray(audio)[:, : audio.shape[1] // spf * spf].reshape(audio.shape[0], -1, spf)
  return np.mean(np.sqrt(np.mean(frames ** 2, axis=-1)) > threshold, axis=-1)


def speech_mask(audio: np.ndarray, sample_rate: int, min_active: float = 0.3,
                threshold: float = SPEECH_RMS) -> np.ndarray:
  """`[B, T]` -> bool `[B]`: windows with speech in at least `min_active` of their 40 ms frames."""
  return speech_activity(audio, sample_rate, threshold) >= min_active


def evaluate(kind: str, codec, batches: Iterable[dict], keep_samples: int = 2) -> tuple[dict, dict]:
  """Offline encode -> decode over `batches` (the public, validated API). Returns (metrics, samples).

  Only a window's valid units count (`unit_mask`: the raw head zero-pads windows past the end of
  a short conversation; padding is not held-out data). The codec runs on the whole padded
  window (causal: padding after the end never changes what came before).
  Audio: SI-SNR, log-mel distance, STOI and PESQ (narrow-/wide-band) over windows that contain
  speech (`speech_mask`),
  STOI also over every window; video: PSNR (one MSE over all valid frames) and SSIM (mean over
  valid frames), plus `psnr_db_with_padding` (all frames, for reference). Both: per-quantiser
  code perplexity and used fraction over valid units.
  """
  refs, recs, codes_all = [], [], []
  for b in batches:
    x = np.asarray(b[kind])
    c = np.asarray(codec.encode(x))
    y = np.asarray(codec.decode(c))
    mask = np.asarray(b.get("unit_mask", np.ones((x.shape[0], 1), bool)))
    for i in range(x.shape[0]):
      n = int(mask[i].sum()) if mask.shape[1] > 1 else 0
      per_unit = x.shape[1] // mask.shape[1]
      cut = n * per_unit if n else x.shape[1]
      cpu = c.shape[1] // mask.shape[1]
      refs.append((x[i, :cut], x[i]))
      recs.append((y[i, :cut], y[i]))
      codes_all.append(c[i, : (n * cpu if n else c.shape[1])])
  ccfg = codec.cfg
  out: dict = {"windows": len(refs)}
  codes = np.concatenate(codes_all)
  if kind == "audio":
    sr = ccfg.sample_rate
    ref = [r for r, _ in refs]
    rec = [r for r, _ in recs]
    sp = np.array([bool(speech_mask(r[None], sr)[0]) for r in ref])
    out["speech_windows"] = int(sp.sum())
    out["seconds"] = round(float(sum(r.size for r in ref) / sr), 2)
    if sp.any():
      idx = np.flatnonzero(sp)
      out["stoi"] = float(np.mean([metrics.stoi(rec[i], ref[i], sr) for i in idx]))
      out["si_snr_db"] = float(np.mean([metrics.si_snr(rec[i], ref[i]) for i in idx]))
      out["log_mel_distance"] = float(np.mean([metrics.log_mel_distance(rec[i], ref[i], sr) for i in idx]))
      for mode in ("nb", "wb"):
        out[f"pesq_{mode}"] = float(np.nanmean([metrics.pesq(rec[i], ref[i], sr, mode) for i in idx]))
    all_stoi = [metrics.stoi(rec[i], ref[i], sr) for i in range(len(ref)) if np.abs(ref[i]).max() > 1e-6]
    out["stoi_all_windows"] = float(np.nanmean(all_stoi)) if all_stoi else float("nan")
    usage = metrics.codebook_usage(codes, ccfg.codebook_size)
    order = np.argsort(-sp.astype(int), kind="stable")[:keep_samples]
  else:
    sq = sum(float(np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2)) for (a, _), (b, _) in zip(recs, refs))
    count = sum(a.size for a, _ in refs)
    out["frames"] = int(sum(a.shape[0] for a, _ in refs))
    out["psnr_db"] = float(10 * np.log10(255.0 ** 2 / max(sq / count, 1e-10)))
    out["psnr_db_with_padding"] = metrics.psnr(np.stack([b for _, b in recs]), np.stack([b for _, b in refs]))
    out["ssim"] = float(np.mean([metrics.ssim(a, b) for (a, _), (b, _) in zip(recs, refs) if a.size]))
    usage = metrics.codebook_usage(codes.reshape(-1, 1), ccfg.codebook_size)
    order = np.arange(min(keep_samples, len(refs)))
  out["bitrate_bps"] = round(ccfg.bitrate_bps, 1)
  out["perplexity"] = [round(p, 1) for p in usage["perplexity"]]
  out["used_fraction"] = [round(u, 4) for u in usage["used_fraction"]]
  samples = {"reference": [refs[i][0] for i in order], "reconstruction": [recs[i][0] for i in order]}
  return out, samples


def load_codec(workdir: str, step: int | None = None):
  """Trained codec from a `launch.train_codec` run directory -> (codec, kind, step).

  A thin wrapper of `wan_streamer_jax.train.checkpoint.load_model` (the one checkpoint format).
  """
  from wan_streamer_jax.train.checkpoint import load_model
  codec, _, kind, step = load_model(workdir, step=step)
  if kind not in KINDS:
    raise ValueError(f"load_codec: expected a codec run in {workdir}, found a {kind} run")
  return codec, kind, step


class StreamCache:
  """Random-access wrapper of a corpus source that keeps only one codec's streams, decoded once.

  The raw-window head (`data_pipelines.pipelines.RawWindow`) reads both audio and video of a
  conversation; decoding a whole conversation's zlib video to cut one audio window dominated
  the audio codec's step time. This wrapper decodes each conversation once, keeps `kind`'s
  streams in memory and hands the head a `[frames, 1, 1, 3]` placeholder for the other kind
  (audio: `[1]`-sample placeholders are not needed, audio is small and kept).
  """

  def __init__(self, source, kind: str):
    self.source, self.kind, self._cache = source, kind, {}

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if index not in self._cache:
      ex = self.source[index]
      keep = {k: ex[k] for k in ("num_units", "user_camera_on", "user_audio", "model_audio")}
      if self.kind == "video":
        keep.update(user_video=ex["user_video"], model_video=ex["model_video"])
      else:
        n = int(ex["num_units"]) * 4
        keep.update(user_video=np.zeros((n, 1, 1, 3), np.uint8), model_video=np.zeros((n, 1, 1, 3), np.uint8))
      self._cache[index] = keep
    return self._cache[index]
