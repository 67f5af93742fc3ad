"""~8B-parameter config for TPU pods: base_1b's codecs and layout, a 32-layer 4096-wide trunk."""

from configs import base_1b
from wan_streamer_jax.config import Config, to_config_dict


def get_config():
  base = Config.from_dict(base_1b.get_config())
  return to_config_dict(base.replace(
      name="large_7b",
      model=dict(embed_dim=4096, num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128, mlp_dim=14336,
                 rope_sections=(64, 32, 32), window_units=750, sink_units=4),
      mesh=dict(data=-1, fsdp=16, tensor=4),
      optimizer=dict(learning_rate=1.5e-4, warmup_steps=2000, decay_steps=500_000),
      train=dict(batch_size=1024, units_per_example=128, num_steps=500_000),
  ))
