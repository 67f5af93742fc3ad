"""Small CPU demo: 64x64 video (8x8 latent grid), 16 kHz audio at ~1 kbps, 176 tokens per unit."""

from wan_streamer_jax.config import (AudioCodecConfig, Config, ModelConfig, OptimizerConfig, TextConfig,
                                     TrainConfig, VideoCodecConfig, to_config_dict)


def get_config():
  return to_config_dict(Config(
      name="small",
      video=VideoCodecConfig(height=64, width=64, spatial_stride=8),
      audio=AudioCodecConfig(sample_rate=16000, num_quantizers=4, levels=(8, 5, 5, 5)),
      text=TextConfig(text_slots=8),
      model=ModelConfig(embed_dim=256, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64,
                        mlp_dim=768, rope_sections=(32, 16, 16), window_units=64, sink_units=1),
      optimizer=OptimizerConfig(learning_rate=2e-3, warmup_steps=20, decay_steps=2000),
      train=TrainConfig(batch_size=4, units_per_example=8, num_steps=200, log_every=10, checkpoint_every=50),
  ))
