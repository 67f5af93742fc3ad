"""Tiny config for tests: 16x16 video, 16 kHz audio with 2 quantisers, 32 tokens per unit."""

from wan_streamer_jax.config import (AudioCodecConfig, Config, ModelConfig, TextConfig, TrainConfig,
                                     VideoCodecConfig, to_config_dict)


def get_config():
  return to_config_dict(Config(
      name="tiny",
      video=VideoCodecConfig(height=16, width=16, spatial_stride=8),
      audio=AudioCodecConfig(sample_rate=16000, num_quantizers=2),
      text=TextConfig(text_slots=4),
      model=ModelConfig(embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                        mlp_dim=128, rope_sections=(8, 4, 4)),
      train=TrainConfig(batch_size=4, units_per_example=8, num_steps=20, checkpoint_every=10),
  ))
