"""Video codec of the large models (256x256 -> 16x16 latent, FSQ(8,8,8,5,5,5)): an accelerator run.

    python -m launch.train_codec --config=configs/codec_video_large.py --data_dir=DATA --corpus_size=full \
        --workdir=gs://.../codec_video_large

The codec section is `configs/large_7b.py`'s; only the schedule and a pure
data-parallel mesh are set here (the codec is small enough to replicate).
"""

import os

from wan_streamer_jax.config import load_config, to_config_dict


def get_config():
  base = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "large_7b.py"))
  steps = 200_000
  return to_config_dict(base.replace(
      name="codec_video_large",
      codec_train=dict(kind="video"),
      mesh=dict(data=-1, fsdp=1, tensor=1),
      optimizer=dict(learning_rate=5e-4, warmup_steps=1000, decay_steps=steps, end_lr_fraction=0.05,
                     b1=0.9, b2=0.99, weight_decay=0.0, grad_clip_norm=100.0),
      train=dict(batch_size=256, units_per_example=4, num_steps=steps, log_every=100,
                 checkpoint_every=5000, checkpoints_to_keep=3)))
