"""Video codec of the small model (64x64 -> 8x8 latent, FSQ(8,5,5,5)): the documented CPU run.

    python -m launch.train_codec --config=configs/codec_video_small.py --data_dir=DATA --workdir=runs/codec_video_small

The codec section is `configs/small.py`'s (so the tokens fit the small model);
only the training schedule is set here.
"""

import os

from wan_streamer_jax.config import load_config, to_config_dict


def get_config():
  base = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "small.py"))
  steps = 4000
  return to_config_dict(base.replace(
      name="codec_video_small",
      codec_train=dict(kind="video"),
      optimizer=dict(learning_rate=1e-3, warmup_steps=100, decay_steps=steps, end_lr_fraction=0.05,
                     b1=0.9, b2=0.99, weight_decay=0.0, grad_clip_norm=100.0),
      train=dict(batch_size=8, units_per_example=2, num_steps=steps, log_every=50, checkpoint_every=1000,
                 checkpoints_to_keep=2)))
