"""A serving artifact of the streaming engine's step (`writer.write_artifact` + the engine's metadata).

    manifest = export_engine(engine, "/tmp/art", platforms=("cpu", "cuda", "tpu"))

The manifest carries, besides the flat specs: the config, the unit layout
(group sizes and slices, vocabularies, MISSING ids), `num_slots`,
`sample_rate`, `samples_per_unit`, `frames_per_unit`, `height`, `width`,
`text_slots`, `unit_seconds`, `fps`, the sampling settings and where the
weights came from. The exported CPU/GPU step uses the `xla` attention (Pallas /
Triton custom calls are not guaranteed stable by `jax.export`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax

from wan_streamer_jax import schedule
from wan_streamer_jax.config import FRAMES_PER_UNIT, GROUPS, UNIT_SECONDS, VIDEO_FPS, TextConfig
from wan_streamer_jax.export import specs as S
from wan_streamer_jax.export.writer import RESERVED_KEYS, write_artifact

EXPORTABLE_ATTENTION = ("xla", "reference")


def unit_layout_metadata(cfg) -> dict:
  layout = schedule.unit_layout(cfg)
  return {"tokens_per_unit": layout.tokens_per_unit,
          "groups": {g: [layout.group_slices[g].start, layout.group_slices[g].stop] for g in GROUPS},
          "vocab_sizes": {k: int(v) for k, v in layout.vocab_sizes.items()},
          "missing_ids": {"video": cfg.video.missing_id, "audio": cfg.audio.missing_id, "text": TextConfig.MISSING},
          "text_specials": {"PAD": TextConfig.PAD, "WORD_END": TextConfig.WORD_END,
                            "END_OF_TURN": TextConfig.END_OF_TURN, "MISSING": TextConfig.MISSING},
          "num_levels": int(layout.num_levels)}


def engine_input_specs(engine) -> dict:
  """The engine's input spec as manifest specs, with the value checks of `engine.check_inputs`.

  Audio: finite (the step clips it to [-1, 1]); text: ids in [0, VOCAB_SIZE), PAD when silent.
  """
  extras = {"audio": {"finite": True}, "text": {"range": [0, TextConfig.VOCAB_SIZE - 1], "fill": TextConfig.PAD}}
  meaning = engine.input_meaning() if hasattr(engine, "input_meaning") else {}
  return {name: S.spec_of(sds, **extras.get(name, {}), **({"meaning": meaning[name]} if name in meaning else {}))
          for name, sds in engine.input_spec().items()}


def export_engine(engine, path: str, *, platforms: Sequence[str] = ("cpu",), param_dtype: str | None = None,
                  metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> dict:
  cfg = engine.cfg
  impl = getattr(engine, "attention_impl", "xla")  # the engine's own (constructor default "xla")
  if impl not in EXPORTABLE_ATTENTION:
    raise ValueError(f"attention_impl: expected one of {EXPORTABLE_ATTENTION} for an exported step "
                     f"(custom calls are not stable under jax.export), received {impl!r}")
  sampling = getattr(engine, "sampling", None)
  own = engine.manifest() if hasattr(engine, "manifest") else {}   # the engine's description first
  meta = {
      **{k: v for k, v in own.items() if k not in RESERVED_KEYS and k != "masks"},
      "config": cfg.to_dict(),
      "unit_layout": unit_layout_metadata(cfg),
      "sample_rate": cfg.audio.sample_rate, "samples_per_unit": cfg.audio.samples_per_unit,
      "frames_per_unit": FRAMES_PER_UNIT, "height": cfg.video.height, "width": cfg.video.width,
      "text_slots": cfg.text.text_slots, "unit_seconds": UNIT_SECONDS, "fps": VIDEO_FPS,
      "sampling": dataclasses.asdict(sampling) if dataclasses.is_dataclass(sampling) else None,
      "turn_states": own.get("turn_states", {"silent": 0, "speaking": 1, "yielded": 2}),
      "attention_impl": impl, "cache_units": int(engine.capacity_units),
      **dict(metadata or {}),
  }
  return write_artifact(path, step_fn=engine.step_fn, init_fn=lambda seed: engine.init_state(seed),
                        params=engine.params, num_slots=engine.num_slots, input_specs=engine_input_specs(engine),
                        platforms=platforms, param_dtype=param_dtype, metadata=meta, overwrite=overwrite)


def current_platform() -> str:
  """The jax.export platform name of the default backend ("cpu", "cuda", "tpu")."""
  return S.export_platform(jax.default_backend())


def serve_engine(engine, out_dir: str | None = None, *, metadata: Mapping[str, Any] | None = None):
  """`engine` exported for this machine's platform into `out_dir` (a fresh temporary folder by
  default) and loaded back as a `Server`: what `launch.serve --checkpoint` serves. -> `(server, path)`."""
  import tempfile
  from wan_streamer_jax.export.server import load_server
  path = out_dir or os.path.join(tempfile.mkdtemp(prefix="wan_serve_"), "artifact")
  export_engine(engine, path, platforms=(current_platform(),), metadata=metadata)
  return load_server(path), path
