"""Reading and writing audio / video files, resampled to the corpus clock.

- WAV: `scipy.io.wavfile` (PCM 8/16/24/32-bit or float; stereo is averaged).
- MP4 (and anything ffmpeg reads): the `imageio-ffmpeg` wheel, which ships its
  own ffmpeg binary (no download at run time). Without it, MP4 input raises a
  clear `MediaError` and PNG-frame folders still work.
- PNG frames: a folder of `*.png` sorted by name, optional `fps.txt` (default 25).
- GIF: Pillow.

Every reader raises `MediaError(path, reason)` on a missing or corrupt file.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import warnings

import numpy as np
from scipy import signal
from scipy.io import wavfile

from wan_streamer_jax.config import VIDEO_FPS


@contextlib.contextmanager
def fork_exec_ok():
  """Silences JAX's os.fork() warning around subprocess launches.

  `subprocess` forks and immediately execs in C (no Python runs in the child),
  which is safe in a multi-threaded process; JAX's at-fork hook warns anyway.
  """
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    yield


class MediaError(Exception):
  """A media file that is missing, unreadable or corrupt; `path` names it."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path, self.reason = path, reason


def read_wav(path: str, sample_rate: int) -> np.ndarray:
  """float32 `[samples]` mono in [-1, 1] at `sample_rate`."""
  if not os.path.isfile(path):
    raise MediaError(path, "file not found")
  try:
    rate, data = wavfile.read(path)
  except Exception as e:  # noqa: BLE001 — scipy raises ValueError, EOFError, struct.error, ...
    raise MediaError(path, f"cannot read WAV ({type(e).__name__}: {e})") from e
  if data.size == 0:
    raise MediaError(path, "WAV has no samples")
  if data.dtype == np.uint8:
    x = (data.astype(np.float32) - 128.0) / 128.0
  elif np.issubdtype(data.dtype, np.integer):
    x = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
  else:
    x = data.astype(np.float32)
  if x.ndim == 2:
    x = x.mean(axis=1)
  if not np.all(np.isfinite(x)):
    raise MediaError(path, "WAV contains NaN or inf samples")
  return resample_audio(x, int(rate), sample_rate)


def resample_audio(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  if rate_in == rate_out:
    return np.clip(x, -1.0, 1.0).astype(np.float32)
  g = math.gcd(rate_in, rate_out)
  y = signal.resample_poly(x, rate_out // g, rate_in // g)
  return np.clip(y, -1.0, 1.0).astype(np.float32)


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
  """16-bit PCM mono."""
  pcm = np.clip(np.rint(np.asarray(audio, np.float32) * 32767.0), -32768, 32767).astype(np.int16)
  wavfile.write(path, sample_rate, pcm)


def have_ffmpeg() -> bool:
  try:
    import imageio_ffmpeg
    imageio_ffmpeg.get_ffmpeg_exe()
    return True
  except Exception:  # noqa: BLE001
    return False


def read_video(path: str, height: int, width: int, num_frames: int | None = None) -> np.ndarray:
  """uint8 `[frames, height, width, 3]` at 25 fps from an MP4 file or a PNG-frame folder.

  Frame `k` of the output is the source frame shown at `k / 25` s (the latest
  one not after it). `num_frames` truncates (never pads).
  """
  if os.path.isdir(path):
    frames, fps = _read_png_folder(path)
  elif os.path.isfile(path):
    frames, fps = _read_ffmpeg(path)
  else:
    raise MediaError(path, "file not found")
  if frames.shape[0] == 0:
    raise MediaError(path, "video has no frames")
  n_out = int(math.floor(frames.shape[0] * VIDEO_FPS / fps + 1e-6))
  n_out = max(1, n_out if num_frames is None else min(n_out, num_frames))
  src = np.minimum(np.floor(np.arange(n_out) * fps / VIDEO_FPS + 1e-6).astype(np.int64), frames.shape[0] - 1)
  return resize_frames(frames[src], height, width)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  if frames.shape[1:3] == (height, width):
    return np.ascontiguousarray(frames)
  from PIL import Image
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BOX)) for f in frames])


def _read_png_folder(path: str):
  from PIL import Image
  files = sorted(glob.glob(os.path.join(path, "*.png")))
  if not files:
    raise MediaError(path, "no *.png frames in the folder")
  fps = float(VIDEO_FPS)
  fps_file = os.path.join(path, "fps.txt")
  if os.path.exists(fps_file):
    try:
      fps = float(open(fps_file).read().strip())
    except ValueError as e:
      raise MediaError(fps_file, f"not a number ({e})") from e
  frames = []
  for f in files:
    try:
      with Image.open(f) as im:
        frames.append(np.asarray(im.convert("RGB")))
    except Exception as e:  # noqa: BLE001 — PIL raises many types on corrupt files
      raise MediaError(f, f"cannot read PNG ({type(e).__name__}: {e})") from e
  if len({fr.shape for fr in frames}) != 1:
    raise MediaError(path, "PNG frames have different sizes")
  return np.stack(frames), fps


def _read_ffmpeg(path: str):
  try:
    import imageio_ffmpeg
  except ImportError as e:
    raise MediaError(path, "reading MP4 needs the `imageio-ffmpeg` package (pip install imageio-ffmpeg); "
                           "or give the video as a folder of PNG frames") from e
  try:
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    with fork_exec_ok():
      meta = next(reader)
    w, h = meta["size"]
    fps = float(meta.get("fps") or VIDEO_FPS)
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
  except MediaError:
    raise
  except Exception as e:  # noqa: BLE001 — ffmpeg failures surface as RuntimeError/OSError/StopIteration
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = lines[0] if lines else ""
    if len(lines) > 1 and "=== stderr ===" in str(e):  # imageio-ffmpeg: the useful part is ffmpeg's last line
      detail += " / " + lines[-1]
    raise MediaError(path, f"cannot decode video ({type(e).__name__}: {detail[:300]})") from e
  if not frames:
    raise MediaError(path, "video has no frames")
  return np.stack(frames), fps


def write_mp4(path: str, frames: np.ndarray, fps: int = VIDEO_FPS, audio_path: str | None = None) -> None:
  """H.264 MP4 (needs imageio-ffmpeg); frames uint8 `[F, H, W, 3]`; optional WAV muxed in."""
  import imageio_ffmpeg
  h, w = frames.shape[1:3]
  kwargs = {"audio_path": audio_path} if audio_path else {}
  writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                       macro_block_size=1, quality=9, ffmpeg_log_level="error", **kwargs)
  with fork_exec_ok():
    writer.send(None)
  for f in frames:
    writer.send(np.ascontiguousarray(f))
  writer.close()


def write_gif(path: str, frames: np.ndarray, fps: int = VIDEO_FPS, scale: int = 1) -> None:
  from PIL import Image
  imgs = [Image.fromarray(f) for f in frames]
  if scale > 1:
    imgs = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in imgs]
  imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
