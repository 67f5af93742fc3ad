"""The documented demo (`python -m launch.demo`): what 2 CPU cores can learn in about an hour of training.

Chosen for the CPU, against `small` (176 tokens per unit, trained on 8-unit windows of its 64-unit window):
- 32x32 video with an 8x8 stride: 16 video tokens per unit and direction (small: 64). Enough for the
  avatar's mouth (the lip-sync metric), a quarter of the tokens; the video codec is 4x cheaper.
- the small config's audio codec (16 kHz, 4 x FSQ(8,5,5,5), ~1 kbps): 16 tokens per unit and direction.
- 4 text slots: 72 tokens per unit in all.
- an attention window of 24 units (3.84 s: a question and the start of its answer) plus 1 sink unit,
  and training windows of sink + 2 x window = 49 units, so every training window covers the whole
  attention span used when streaming (the second half of each window sees exactly what streaming sees)
  and its sink is the conversation's first unit (`data_pipelines/packing.TokenWindow`).
"""

from wan_streamer_jax.config import (AudioCodecConfig, Config, ModelConfig, OptimizerConfig, TextConfig,
                                     TrainConfig, VideoCodecConfig, to_config_dict)

WINDOW_UNITS, SINK_UNITS = 24, 1


def get_config():
  return to_config_dict(Config(
      name="demo",
      video=VideoCodecConfig(height=32, width=32, spatial_stride=8, channels=(32, 64)),
      audio=AudioCodecConfig(sample_rate=16000, num_quantizers=4, levels=(8, 5, 5, 5)),
      text=TextConfig(text_slots=4),
      model=ModelConfig(embed_dim=192, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=48, mlp_dim=576,
                        rope_sections=(16, 16, 16), window_units=WINDOW_UNITS, sink_units=SINK_UNITS,
                        attention_impl="xla"),
      optimizer=OptimizerConfig(learning_rate=2e-3, warmup_steps=50, decay_steps=3000),
      train=TrainConfig(batch_size=4, units_per_example=SINK_UNITS + 2 * WINDOW_UNITS, num_steps=3000,
                        log_every=25, eval_every=500, checkpoint_every=250, checkpoints_to_keep=2),
  ))
