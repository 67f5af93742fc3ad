"""Config plumbing shared by every config section: unit constants, errors, typed dict -> dataclass.

Sections are frozen dataclasses; `from_mapping` builds one from a nested
mapping, dispatching nested sections by the fields' type hints (a field typed
with a dataclass is built recursively), so a new section needs no registration.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Mapping

UNIT_SECONDS = 0.16  # one streaming unit = 160 ms
VIDEO_FPS = 25
FRAMES_PER_UNIT = 4  # 4 frames at 25 fps = 160 ms
AUDIO_FRAMES_PER_UNIT = 4  # codec frames at 25 Hz (40 ms each)
TICKS_PER_UNIT = 4  # RoPE time ticks of 40 ms

GROUPS = ("video_in", "audio_in", "text_in", "video_out", "audio_out", "text_out")
KINDS = ("video", "audio", "text")
ROLES = ("in", "out")


class ConfigError(ValueError):
  """A config value (or a run setting checked against the config) is wrong; the message says how.

  Launchers print it as one line `error: ...` (no traceback).
  """


def _fail(field: str, expected: str, got: Any) -> None:
  raise ConfigError(f"config field `{field}`: expected {expected}, got {got!r}")


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
  return typing.get_type_hints(cls)


def from_mapping(cls, d: Mapping[str, Any], prefix: str = ""):
  """`cls(**d)` with nested sections built from their type hints; unknown keys fail naming them."""
  if hasattr(d, "to_dict"):
    d = d.to_dict()
  if not isinstance(d, Mapping):
    _fail(prefix.rstrip(".") or "config", f"a mapping of the fields of {cls.__name__}", d)
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = set(d) - fields
  if unknown:
    _fail(prefix.rstrip(".") or "config", f"only the fields {sorted(fields)}", sorted(unknown))
  hints = _hints(cls)
  kwargs = {}
  for name, val in d.items():
    ftype = hints[name]
    if dataclasses.is_dataclass(ftype):
      kwargs[name] = from_mapping(ftype, val, f"{prefix}{name}.")
    elif isinstance(val, list):
      kwargs[name] = tuple(val)
    else:
      kwargs[name] = val
  return cls(**kwargs)
