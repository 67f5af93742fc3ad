"""Does a video codec keep what the user shows? The shape's colour read back from reconstructed frames.

PSNR and SSIM are dominated by the face and the wall: a codec can score 25.7 dB and drop the coloured
shape entirely (the demo's first video codec did). This probe reads the colour of the user's shape in
each held-out frame where the corpus drew it (`metadata.shape`), from the codec's round trip, as the
SHAPE_COLOURS name nearest to the mean of the shape's core pixels (`scenes.shape_core`). The same probe
on the input frames is its ceiling (and checks the probe).
"""

from __future__ import annotations

import json

import numpy as np

from data_pipelines import scenes
from wan_streamer_jax.config import FRAMES_PER_UNIT


def shape_colour_accuracy(codec, source, max_conversations: int | None = None) -> dict:
  """Colour of the user's shape read from `codec.decode(codec.encode(user_video))`.

  Args:
    codec: a video codec (`codecs.video_codec.VideoCodec`: `encode` / `decode` of uint8 clips).
    source: random-access corpus conversations (`user_video` uint8 `[frames, H, W, 3]`,
      `user_camera_on`, `num_units`, `metadata` JSON with `shape` and `camera`).
    max_conversations: read at most this many conversations of `source`.
  Returns:
    {"frames", "conversations", "accuracy" (codec), "input_accuracy" (the probe on the input),
     "chance"}: frames are the last frame of every camera-on unit inside a shape span but its first.
  """
  n = len(source) if max_conversations is None else min(len(source), int(max_conversations))
  hits = probe_hits = frames = convs = 0
  core = None
  for i in range(n):
    ex = source[i]
    meta = json.loads(ex["metadata"])
    spans = meta["shape"]["spans_units"]
    if not spans or meta["camera"] == "off":
      continue
    video = np.asarray(ex["user_video"])
    if core is None:
      core = scenes.shape_core(video.shape[1], video.shape[2])
    recon = np.asarray(codec.decode(codec.encode(video[None]))[0])
    truth = meta["shape"]["colour"]
    units, camera = int(ex["num_units"]), np.asarray(ex["user_camera_on"], bool)
    used = False
    for a, b in spans:
      for u in range(a + 1, min(b, units)):  # a span's first latent frame mixes frames before the shape
        if not camera[u]:
          continue
        f = u * FRAMES_PER_UNIT + FRAMES_PER_UNIT - 1
        frames, used = frames + 1, True
        hits += scenes.nearest_shape_colour(recon[f][core].mean(0)) == truth
        probe_hits += scenes.nearest_shape_colour(video[f][core].mean(0)) == truth
    convs += used
  return {"frames": frames, "conversations": convs, "accuracy": hits / max(frames, 1),
          "input_accuracy": probe_hits / max(frames, 1), "chance": 1.0 / len(scenes.SHAPE_COLOURS)}
