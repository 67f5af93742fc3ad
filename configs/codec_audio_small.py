"""Audio codec of the small model (16 kHz, 4 x FSQ(8,5,5,5) ~ 997 bps): the documented CPU run.

    python -m launch.make_dataset --config=configs/small.py --size=small --num_train=800 --user_voices=train --data_dir=DATA
    python -m launch.make_dataset --config=configs/small.py --size=small --num_train=300 --data_dir=DATA
    python -m launch.train_codec --config=configs/codec_audio_small.py --data_dir=DATA --config.codec_train.train_voices=train \
        --config.codec_train.augment=True --workdir=runs/codec_audio_small
    python -m launch.bench --what=codec_quality --audio_codec=runs/codec_audio_small

`--config.codec_train.train_voices=train` trains on the corpus whose users speak with every eSpeak NG voice of
the training pool (`data_pipelines/voices.py`; the validation and test voices are held out),
`--config.codec_train.augment=True` adds `data_pipelines/augment.py`'s noise / reverb / EQ / clipping; the final
evaluation stays on the classic corpus' validation split (the in-domain window protocol).

`codec_train.entropy_weight=1.0` adds the FSQ code-usage term (`fsq.soft_code_entropy` over the
batch's speech frames): without it the codec used ~7 of each stage's 10 bits; with it held-out
validation voices went from STOI 0.722 / PESQ-NB 1.45 to 0.746 / 1.49 (6000 steps each, README).
`codec_train.stft_high_weight=0.1` and `codec_train.mel_high_weight=0.1` weigh the log-STFT loss' bins and
the log-mel loss' bands above 4 kHz a tenth of those below (half the linear bins and a quarter of the mel bands
lie above 4 kHz, where the intelligibility cues are not): validation voices 0.746 / 1.49 (both 1) -> 0.751 /
1.56 (STFT 0.25) -> 0.761 / 1.57 (both 0.1); the window protocol 0.779 / 2.78 -> 0.784 / 2.80 -> 0.789 / 2.87.

The codec section is `configs/small.py`'s (so the tokens fit the small model);
only the training schedule and the loss are set here.
"""

import os

from wan_streamer_jax.config import load_config, to_config_dict


def get_config():
  base = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "small.py"))
  steps = 6000
  return to_config_dict(base.replace(
      name="codec_audio_small",
      codec_train=dict(kind="audio", entropy_weight=1.0, stft_high_weight=0.1, mel_high_weight=0.1),
      optimizer=dict(learning_rate=1e-3, warmup_steps=100, decay_steps=steps, end_lr_fraction=0.05,
                     b1=0.9, b2=0.99, weight_decay=0.0, grad_clip_norm=100.0),
      train=dict(batch_size=16, units_per_example=6, num_steps=steps, log_every=50, checkpoint_every=1000,
                 checkpoints_to_keep=2)))
