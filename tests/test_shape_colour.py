"""The video codec's shape probe: the colour of the user's shape read back from reconstructed frames."""

import json

import numpy as np
import pytest

from data_pipelines import scenes
from wan_streamer_jax.evaluation.shape_colour import shape_colour_accuracy


def _conversation(colour, kind, units=4, size=32, camera=True):
  rng = np.random.default_rng(0)
  frames = units * 4
  video = scenes.render_user_video(scenes.SceneStyle.sample(rng), np.zeros(frames), np.ones(frames, bool),
                                   colour, kind, np.full(frames, camera), size, size)
  meta = {"shape": {"colour": colour, "kind": kind, "spans_units": [[0, units - 1]]},
          "camera": "on" if camera else "off"}
  return {"user_video": video, "user_camera_on": np.full(units, camera), "num_units": np.int32(units),
          "metadata": json.dumps(meta)}


class _Identity:
  def encode(self, x):
    return x

  def decode(self, x):
    return x


class _Eraser(_Identity):  # keeps the scene, paints the shape's core with the wall's colour
  def decode(self, x):
    out = np.array(x)  # [1, frames, H, W, 3]
    out[..., scenes.shape_core(x.shape[-3], x.shape[-2]), :] = out[..., 0:1, 0, :]
    return out


@pytest.mark.parametrize("size", [16, 32])
def test_the_probe_reads_every_colour_and_kind_from_the_input(size):
  source = [_conversation(c, k, size=size) for c in scenes.SHAPE_COLOURS for k in scenes.SHAPE_KINDS]
  res = shape_colour_accuracy(_Identity(), source)
  assert res["frames"] == len(source) * 2 and res["conversations"] == len(source)  # units 1, 2 of [0, 3]
  assert res["accuracy"] == 1.0 and res["input_accuracy"] == 1.0 and res["chance"] == 1 / 8


def test_a_codec_that_drops_the_shape_scores_no_better_than_chance():
  source = [_conversation(c, "square") for c in scenes.SHAPE_COLOURS]
  res = shape_colour_accuracy(_Eraser(), source)
  assert res["input_accuracy"] == 1.0 and res["accuracy"] <= 0.25, res


def test_conversations_without_a_shape_or_camera_are_not_counted():
  no_camera = _conversation("red", "circle", camera=False)
  no_shape = dict(_conversation("red", "circle"), metadata=json.dumps({"shape": {"colour": "red", "spans_units": []},
                                                                      "camera": "on"}))
  res = shape_colour_accuracy(_Identity(), [no_camera, no_shape])
  assert res["frames"] == 0 and res["conversations"] == 0
