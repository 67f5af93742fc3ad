"""Audio codec of the large models (24 kHz, 8 x FSQ(8,8,8,5,5,5)): an accelerator run.

    python -m launch.train_codec --config=configs/codec_audio_large.py --data_dir=DATA --corpus_size=full \
        --workdir=gs://.../codec_audio_large

The token format (rate, quantisers, levels) is `configs/large_7b.py`'s; the
architecture is the small codec's, scaled: 10 ms hops (240 samples) under a
causal STFT front-end / iSTFT head, 40 ms frames, wider and deeper. Load the
trained codec from its checkpoint (`codecs.training.load_codec`), whose config
records this architecture.
"""

import os

from wan_streamer_jax.config import load_config, to_config_dict


def get_config():
  base = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "large_7b.py"))
  steps = 200_000
  return to_config_dict(base.replace(
      name="codec_audio_large",
      codec_train=dict(kind="audio"),
      mesh=dict(data=-1, fsdp=1, tensor=1),
      optimizer=dict(learning_rate=5e-4, warmup_steps=1000, decay_steps=steps, end_lr_fraction=0.05,
                     b1=0.9, b2=0.99, weight_decay=0.0, grad_clip_norm=100.0),
      train=dict(batch_size=256, units_per_example=12, num_steps=steps, log_every=100,
                 checkpoint_every=5000, checkpoints_to_keep=3)))
