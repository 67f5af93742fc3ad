"""The audio codec's adversarial training: discriminators, GAN losses, the gated joint step, resume."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.helpers import read_metrics
from wan_streamer_jax.codecs import discriminator as disc_lib
from wan_streamer_jax.codecs.adversarial import create_discriminator
from wan_streamer_jax.codecs.synthetic import SyntheticSignalSource
from wan_streamer_jax.codecs.train_task import codec_task
from wan_streamer_jax.config import ConfigError, load_config
from wan_streamer_jax.parallel.mesh import make_mesh
from wan_streamer_jax.train import loop
from wan_streamer_jax.train.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000


def test_sub_discriminators_return_logits_and_every_hidden_layer():
  d = disc_lib.Discriminator((2, 3), (256,), 4, rngs=nnx.Rngs(0))
  out = d(jnp.zeros((2, 2560), jnp.float32))
  assert len(out) == 3
  (p2, f2), (p3, f3), (s, fs) = out
  assert p2.shape == (2, 48, 2) and p3.shape == (2, 32, 3)  # 1280 / 27 and 854 (padded 2562 / 3) / 27, ceil
  assert [f.shape[-1] for f in f2] == [4, 8, 16, 16] and len(fs) == 4
  assert s.shape == (2, 37, 129 // 8 + 1)  # 37 STFT frames (hop 64), 129 bins halved three times
  with pytest.raises(ValueError, match="at least one period"):
    disc_lib.Discriminator((), (), 4, rngs=nnx.Rngs(0))


def test_least_squares_and_feature_matching_losses_have_their_known_values():
  ones, zeros = jnp.ones((2, 5)), jnp.zeros((2, 5))
  feats = [jnp.full((2, 3, 4), 2.0), jnp.full((2, 3), -1.0)]
  real, fake = [(ones, feats)], [(zeros, [f * 1.5 for f in feats])]
  assert float(disc_lib.discriminator_loss(real, fake)) == 0.0  # a perfect discriminator
  assert float(disc_lib.discriminator_loss(fake, real)) == 2.0  # the exact opposite
  assert float(disc_lib.generator_loss(fake)) == 1.0 and float(disc_lib.generator_loss(real)) == 0.0
  np.testing.assert_allclose(float(disc_lib.feature_matching_loss(real, fake)), 0.5, rtol=1e-4)  # |1.5a - a| / |a|
  assert float(disc_lib.feature_matching_loss(real, real)) == 0.0
  # feature matching moves the reconstruction only: no gradient through the reference's activations
  g = jax.grad(lambda a: disc_lib.feature_matching_loss([(ones, [a])], [(ones, [jnp.ones(3)])]))(jnp.full(3, 2.0))
  np.testing.assert_array_equal(g, 0.0)


def _harmonic_and_noise(rng: np.random.Generator, batch: int, t: int) -> tuple[np.ndarray, np.ndarray]:
  """Voiced-like signals (harmonics of 120-250 Hz) and noise under the same spectral envelope (the
  harmonic spectrum smoothed over 500 Hz: the level per band is kept, the harmonic lines are not)."""
  n = np.arange(t) / SR
  f0 = rng.uniform(120, 250, (batch, 1))
  x = sum(np.sin(2 * np.pi * k * f0 * n + rng.uniform(0, 6.3, (batch, 1))) / k for k in range(1, 20))
  x = 0.1 * x / np.abs(x).max(axis=1, keepdims=True)
  power = np.abs(np.fft.rfft(x, axis=1)) ** 2
  width = int(500 * t / SR)
  envelope = np.sqrt(np.apply_along_axis(lambda p: np.convolve(p, np.ones(width) / width, "same"), 1, power))
  phase = np.exp(2j * np.pi * rng.uniform(size=envelope.shape))
  noise = np.fft.irfft(envelope * phase, n=t, axis=1)
  return x.astype(np.float32), noise.astype(np.float32)


def test_a_discriminator_learns_to_tell_harmonics_from_noise_under_the_same_envelope():
  """The failure the adversarial loss is for: noise with speech's spectrum envelope where speech has
  harmonics. Spectral losses at coarse resolution barely charge it; a discriminator learns to."""
  d = disc_lib.Discriminator((3,), (512,), 8, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(d)
  tx = optax.adam(3e-3, b1=0.5, b2=0.9)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, real, fake):
    loss, g = jax.value_and_grad(
        lambda p: disc_lib.discriminator_loss(nnx.merge(graphdef, p)(real), nnx.merge(graphdef, p)(fake)))(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  rng = np.random.default_rng(0)
  losses = []
  for _ in range(60):
    real, fake = _harmonic_and_noise(rng, 8, 4096)
    params, opt, loss = step(params, opt, real, fake)
    losses.append(float(loss))
  real, fake = _harmonic_and_noise(np.random.default_rng(1), 8, 4096)  # held-out signals
  held = float(disc_lib.discriminator_loss(nnx.merge(graphdef, params)(real), nnx.merge(graphdef, params)(fake)))
  assert np.isfinite(losses).all() and held < 0.3 * np.mean(losses[:5]), (losses[:5], losses[-5:], held)


def test_adversarial_settings_are_validated_before_anything_runs():
  cfg = load_config(os.path.join(ROOT, "configs", "codec_audio_tiny.py"))
  assert not cfg.codec_train.adversarial and cfg.replace(codec_train=dict(fm_weight=1.0)).codec_train.adversarial
  bad = [(dict(adv_weight=-1.0), "adv_weight"), (dict(disc_ffts=(500,)), "disc_ffts"),
         (dict(disc_periods=(1,)), "disc_periods"), (dict(disc_learning_rate=0.0), "disc_learning_rate"),
         (dict(adv_weight=1.0, disc_periods=(), disc_ffts=()), "at least one sub-discriminator"),
         (dict(adv_start_step=-2), "adv_start_step")]
  for fields, msg in bad:
    with pytest.raises(ConfigError, match=msg):
      cfg.replace(codec_train=fields)
  with pytest.raises(ConfigError, match="video codec"):
    cfg.replace(codec_train=dict(kind="video", adv_weight=0.1))


def _adversarial_run(workdir, num_steps: int):
  cfg = load_config(os.path.join(ROOT, "configs", "codec_audio_tiny.py")).replace(
      codec_train=dict(adv_weight=0.5, fm_weight=1.0, adv_start_step=2, disc_periods=(2,), disc_ffts=(256,),
                       disc_channels=4),
      train=dict(num_steps=num_steps, log_every=1, checkpoint_every=2, checkpoints_to_keep=5))
  mesh = make_mesh(cfg.mesh, batch_size=cfg.train.batch_size)
  task = codec_task(cfg, mesh, SyntheticSignalSource(cfg, 64, seed=0))
  loop.train(task, workdir=str(workdir), progress=False)
  return task


def _restore(task, workdir, step: int):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=None, async_save=False, read_only=True)
  restored = ckpt.restore(*task.abstract(), step=step)
  ckpt.close()
  return restored.params, restored.opt


def test_adversarial_step_starts_at_its_step_and_a_resumed_run_equals_the_uninterrupted_one(tmp_path):
  task = _adversarial_run(tmp_path / "straight", 4)
  m = read_metrics(tmp_path / "straight")
  assert [m[s]["adv_on"] for s in range(4)] == [0.0, 0.0, 1.0, 1.0]
  assert all(m[s]["adv_generator"] == 0.0 for s in (0, 1)) and all(m[s]["adv_generator"] > 0 for s in (2, 3))
  assert all(np.isfinite(m[s]["loss"]) and m[s]["feature_matching"] >= 0 for s in range(4))
  init_disc = jax.tree.leaves(nnx.split(create_discriminator(task.cfg, task.cfg.train.seed))[1])
  _, opt2 = _restore(task, tmp_path / "straight", 2)
  params4, opt4 = _restore(task, tmp_path / "straight", 4)
  assert int(opt2["adv"]["step"]) == 2 and int(opt4["adv"]["step"]) == 4
  for a, b in zip(init_disc, jax.tree.leaves(opt2["adv"]["disc"])):  # not trained before adv_start_step
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(not np.array_equal(np.asarray(a), np.asarray(b))  # trained from it on
             for a, b in zip(init_disc, jax.tree.leaves(opt4["adv"]["disc"])))
  # two steps, stop, two more (the discriminator and its optimizer come back from the checkpoint)
  _adversarial_run(tmp_path / "resumed", 2)
  _adversarial_run(tmp_path / "resumed", 4)
  params_r, opt_r = _restore(task, tmp_path / "resumed", 4)
  for a, b in zip(jax.tree.leaves((params4, opt4)), jax.tree.leaves((params_r, opt_r))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
