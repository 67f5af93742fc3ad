"""Adversarial training of the audio codec: the discriminator's state and the joint jitted step.

Enabled by `codec_train.adv_weight > 0` or `codec_train.fm_weight > 0` (`CodecTrainConfig.adversarial`).
The run's state is `(params, opt, adv)` with

    adv = {"disc": discriminator params, "disc_opt": its Adam state, "step": int32 []}

and the checkpoint keeps the codec's `params` item as in a spectral-only run (so every reader
of a codec run works unchanged); `adv` travels in the `opt` item beside the codec's optimizer
state, so a killed run resumes with its discriminator. `adv["step"]` counts the steps taken:
before `codec_train.adv_start_step` the step is the spectral-only step (a `lax.cond`: the
discriminator is neither run nor trained); from it on, one step is

    codec:         loss = spectral (+ entropy, F0) + adv_weight * LS generator + fm_weight * feature matching
                   (the discriminator's current parameters, held fixed)
    discriminator: LS loss on the reference and the same step's reconstruction (no gradient into the codec)

both from the same discriminator parameters (a simultaneous update: one codec forward pass), the
discriminators seeing one `codec_train.disc_window`-sample span of each window: on 2 CPU cores
one discriminator update on a whole batch of 16 x 0.96 s windows cost 1.1 s (five periods, 16
channels) to 3 s (one 512-point STFT sub-discriminator with a full-resolution layer, 16 channels),
against 0.37 s for the codec's whole spectral step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from wan_streamer_jax.codecs import discriminator as disc_lib
from wan_streamer_jax.codecs.training import audio_objective, batch_sharding, replicated
from wan_streamer_jax.config import Config


def create_discriminator(cfg: Config, seed: int = 0) -> disc_lib.Discriminator:
  w = cfg.codec_train
  return disc_lib.Discriminator(tuple(w.disc_periods), tuple(w.disc_ffts), w.disc_channels,
                                rngs=nnx.Rngs(seed + 7919))


def discriminator_optimizer(cfg: Config) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(cfg.optimizer.grad_clip_norm),
                     optax.adam(cfg.codec_train.disc_learning_rate, b1=0.5, b2=0.9))


def init_adv_state(d_params, d_tx: optax.GradientTransformation) -> dict:
  return {"disc": d_params, "disc_opt": d_tx.init(d_params), "step": jnp.zeros((), jnp.int32)}


def make_adversarial_train_step(cfg: Config, graphdef, tx: optax.GradientTransformation, d_graphdef,
                                d_tx: optax.GradientTransformation, mesh, params_abstract, opt_abstract,
                                adv_abstract):
  """Jitted `(params, opt, adv, batch) -> (params, opt, adv, metrics)`, everything replicated but the batch."""
  w = cfg.codec_train
  objective = audio_objective(cfg)
  rep = replicated(mesh)
  shard = lambda tree: jax.tree.map(lambda _: rep, tree)
  zero = jnp.zeros((), jnp.float32)

  def crop(x: jax.Array, step: jax.Array) -> jax.Array:
    """The discriminators judge one `disc_window`-sample span of every window (the same span of the
    reference and the reconstruction; its start a function of the step, so a resumed run repeats it)."""
    t, n = x.shape[1], w.disc_window
    if n >= t:
      return x
    start = jax.random.randint(jax.random.fold_in(jax.random.key(cfg.train.seed), step), (), 0, t - n + 1)
    return jax.lax.dynamic_slice_in_dim(x, start, n, axis=1)

  def codec_objective(p, d_params, batch, step, adversarial: bool):
    loss, m, recon = objective(nnx.merge(graphdef, p), batch)
    if adversarial:
      disc = nnx.merge(d_graphdef, d_params)
      fake, real = disc(crop(recon, step)), disc(crop(batch["audio"], step))
      g, fm = disc_lib.generator_loss(fake), disc_lib.feature_matching_loss(real, fake)
      loss = loss + w.adv_weight * g + w.fm_weight * fm
      m = {**m, "loss": loss, "adv_generator": g, "feature_matching": fm}
    else:
      m = {**m, "adv_generator": zero, "feature_matching": zero}
    return loss, (m, recon)

  def with_discriminator(params, adv, batch):
    (_, (m, recon)), grads = jax.value_and_grad(
        functools.partial(codec_objective, adversarial=True), has_aux=True)(params, adv["disc"], batch, adv["step"])
    real, fake = crop(batch["audio"], adv["step"]), crop(jax.lax.stop_gradient(recon), adv["step"])

    def disc_objective(dp):
      disc = nnx.merge(d_graphdef, dp)
      return disc_lib.discriminator_loss(disc(real), disc(fake))

    d_loss, d_grads = jax.value_and_grad(disc_objective)(adv["disc"])
    d_updates, d_opt = d_tx.update(d_grads, adv["disc_opt"], adv["disc"])
    m = {**m, "adv_discriminator": d_loss, "adv_on": jnp.ones((), jnp.float32)}
    return grads, m, optax.apply_updates(adv["disc"], d_updates), d_opt

  def spectral_only(params, adv, batch):
    (_, (m, _)), grads = jax.value_and_grad(
        functools.partial(codec_objective, adversarial=False), has_aux=True)(params, adv["disc"], batch, adv["step"])
    return grads, {**m, "adv_discriminator": zero, "adv_on": zero}, adv["disc"], adv["disc_opt"]

  def step(params, opt, adv, batch):
    grads, m, d_params, d_opt = jax.lax.cond(adv["step"] >= w.adv_start_step, with_discriminator, spectral_only,
                                             params, adv, batch)
    updates, opt = tx.update(grads, opt, params)
    params = optax.apply_updates(params, updates)
    m["grad_norm"] = optax.tree.norm(grads)
    return params, opt, {"disc": d_params, "disc_opt": d_opt, "step": adv["step"] + 1}, m

  return jax.jit(step, in_shardings=(shard(params_abstract), shard(opt_abstract), shard(adv_abstract),
                                     {"audio": batch_sharding(mesh)}),
                 out_shardings=(shard(params_abstract), shard(opt_abstract), shard(adv_abstract), rep),
                 donate_argnums=(0, 1, 2))
