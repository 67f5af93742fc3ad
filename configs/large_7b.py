"""~7B-parameter config for TPU pods: 256x256 video, 24 kHz audio, 8 quantisers, 2-minute window."""

from wan_streamer_jax.config import (AudioCodecConfig, Config, MeshConfig, ModelConfig, OptimizerConfig,
                                     TextConfig, TrainConfig, VideoCodecConfig, to_config_dict)


def get_config():
  return to_config_dict(Config(
      name="large_7b",
      video=VideoCodecConfig(height=256, width=256, spatial_stride=16, levels=(8, 8, 8, 5, 5, 5),
                             channels=(64, 128, 256, 256, 512)),
      audio=AudioCodecConfig(sample_rate=24000, num_quantizers=8, levels=(8, 8, 8, 5, 5, 5),
                             channels=(64, 128, 256, 512), strides=(2, 4, 4, 3, 10)),
      text=TextConfig(text_slots=16),
      model=ModelConfig(embed_dim=4096, num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
                        mlp_dim=14336, rope_sections=(64, 32, 32), param_dtype="float32",
                        compute_dtype="bfloat16", remat_policy="dots", window_units=750, sink_units=4),
      mesh=MeshConfig(data=-1, fsdp=16, tensor=4),
      optimizer=OptimizerConfig(learning_rate=1.5e-4, warmup_steps=2000, decay_steps=500_000),
      train=TrainConfig(batch_size=1024, units_per_example=128, num_steps=500_000, log_every=100,
                        checkpoint_every=1000),
  ))
