"""`python -m launch.demo --quick` and the chain test: the demo's shape at test size (32 tokens per unit).

16x16 video (4 video tokens per unit and direction), 2 audio quantisers, 4 text slots; an attention
window of 8 units plus 1 sink, trained on windows of sink + window = 9 units (the whole streaming span).
"""

from wan_streamer_jax.config import (AudioCodecConfig, Config, LossConfig, ModelConfig, OptimizerConfig,
                                     TextConfig, TrainConfig, VideoCodecConfig, to_config_dict)

WINDOW_UNITS, SINK_UNITS = 8, 1


def get_config():
  return to_config_dict(Config(
      name="demo_tiny",
      video=VideoCodecConfig(height=16, width=16, spatial_stride=8, channels=(8, 16)),
      audio=AudioCodecConfig(sample_rate=16000, num_quantizers=2, channels=(16, 32), dilations=(1,), latent_dim=8),
      text=TextConfig(text_slots=4),
      model=ModelConfig(embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128,
                        rope_sections=(8, 4, 4), window_units=WINDOW_UNITS, sink_units=SINK_UNITS,
                        attention_impl="xla", depth_layers=2, code_digit_embed=True),
      # text_in's targets are the user's words as heard (an ASR-like target; the input stays MISSING)
      loss=LossConfig(text_in=1.0, text_in_target="heard", answer_weight=10.0, stop_weight=5.0),  # the demo's paths
      optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=5, decay_steps=200),
      train=TrainConfig(batch_size=4, units_per_example=SINK_UNITS + WINDOW_UNITS, num_steps=200, log_every=10,
                        checkpoint_every=100),
  ))
