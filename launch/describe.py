"""Describe a config: `python -m launch.describe --config=configs/large_7b.py`.

Prints tokens per unit by group, parameters, FLOPs per unit, KV-cache bytes.
Nothing is allocated: works for pod-scale configs on a laptop.
"""

from __future__ import annotations

import json

from launch import common

_CONFIG = common.config_flag("tiny", "Config file.")


def describe(cfg) -> dict:
  from wan_streamer_jax import schedule
  from wan_streamer_jax.model import flops
  from wan_streamer_jax.model.transformer import param_count
  layout = schedule.unit_layout(cfg)
  cost = flops.model_cost(cfg)
  window = cfg.model.window_units
  ctx = (window + cfg.model.sink_units) if window else 375
  return {
      "config": cfg.name,
      "tokens_per_unit": layout.tokens_per_unit,
      "tokens_per_unit_by_group": layout.describe(),
      "tokens_per_second": layout.tokens_per_unit / 0.16,
      "parameters": param_count(cfg),
      "parameters_analytic": cost.params,
      "audio_bitrate_bps": round(cfg.audio.bitrate_bps, 1),
      "train_flops_per_token": flops.train_flops_per_token(cfg),
      "train_flops_per_unit": flops.train_flops_per_token(cfg) * layout.tokens_per_unit,
      "stream_flops_per_unit_full_context": flops.streaming_flops_per_unit(cfg, ctx),
      "stream_tflops_per_second_of_stream": flops.streaming_flops_per_unit(cfg, ctx) / 0.16 / 1e12,
      "kv_cache_bytes_per_unit": cost.kv_bytes_per_unit,
      "kv_cache_bytes_per_minute": flops.kv_cache_bytes(cfg, 60.0),
      "kv_cache_bound_units": (window + cfg.model.sink_units) if window else None,
  }


def main(argv):
  del argv
  from wan_streamer_jax.config import Config
  cfg = Config.from_dict(_CONFIG.value)
  d = describe(cfg)
  width = max(len(k) for k in d)
  for k, v in d.items():
    if isinstance(v, float):
      v = f"{v:.4g}"
    print(f"{k:<{width}}  {v}")
  print(json.dumps(d))


def run():
  common.run(main)


if __name__ == "__main__":
  run()
