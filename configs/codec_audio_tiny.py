"""Audio codec smoke run (tests / CI): the tiny model config's audio codec, a few steps."""

import os

from wan_streamer_jax.config import load_config, to_config_dict


def get_config():
  base = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny.py"))
  return to_config_dict(base.replace(
      name="codec_audio_tiny",
      codec_train=dict(kind="audio"),
      audio=dict(channels=(16, 32), dilations=(1,), latent_dim=8),
      optimizer=dict(learning_rate=1e-3, warmup_steps=2, decay_steps=10, weight_decay=0.0),
      train=dict(batch_size=2, units_per_example=2, num_steps=4, log_every=1, checkpoint_every=2)))
