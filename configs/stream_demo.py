"""Streaming demo (the README's `launch.stream` config): the small model, sized for a 40 ms step on 2 CPU cores.

Why not `configs/small.py`: its window of 64 units x 176 tokens costs 9.4 GFLOP per unit
(8.3 of them attention over the 65-unit cache), ~85 ms at this machine's best measured f32
matmul peak (~110 GFLOP/s on 2 cores) before the codecs run: a 40 ms step is impossible.
Here the same trunk (4 x 256 wide, 4.4 M parameters) and the same audio codec (16 kHz,
4 x FSQ 1000) stream with 32x32 video (the small codec's 8x8-pixel latent, so 4x4 = 16
video tokens per direction; 80 tokens per unit) and a window of 16 units + 1 sink
(2.7 s of context): 0.99 GFLOP per unit. Training windows (24 units) cover the attention
span (17 units), so training and streaming see the same attention pattern.

    python -m launch.describe --config=configs/stream_demo.py
    python -m launch.bench --what=stream --config=configs/stream_demo.py
"""

import os

from wan_streamer_jax.config import load_config, to_config_dict


def get_config():
  base = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "small.py"))
  return to_config_dict(base.replace(
      name="stream_demo",
      video=dict(height=32, width=32, spatial_stride=8),
      model=dict(window_units=16, sink_units=1),
      train=dict(units_per_example=24)))
