"""~1B-parameter config for TPU slices: 256x256 video (16x16 latents), 24 kHz audio, 8 quantisers."""

from wan_streamer_jax.config import (AudioCodecConfig, Config, MeshConfig, ModelConfig, OptimizerConfig,
                                     TextConfig, TrainConfig, VideoCodecConfig, to_config_dict)


def get_config():
  return to_config_dict(Config(
      name="base_1b",
      video=VideoCodecConfig(height=256, width=256, spatial_stride=16, levels=(8, 8, 8, 5, 5, 5),
                             channels=(64, 128, 256, 256, 512)),
      audio=AudioCodecConfig(sample_rate=24000, num_quantizers=8, levels=(8, 8, 8, 5, 5, 5),
                             channels=(512, 1024), strides=(240, 4), dilations=(1, 3, 9), latent_dim=128),
      text=TextConfig(text_slots=16),
      model=ModelConfig(embed_dim=2048, num_layers=20, num_heads=16, num_kv_heads=8, head_dim=128,
                        mlp_dim=5632, rope_sections=(64, 32, 32), param_dtype="float32",
                        compute_dtype="bfloat16", remat_policy="dots", window_units=375, sink_units=4),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      optimizer=OptimizerConfig(learning_rate=3e-4, warmup_steps=2000, decay_steps=200_000),
      train=TrainConfig(batch_size=256, units_per_example=64, num_steps=200_000, log_every=100,
                        checkpoint_every=1000),
  ))
