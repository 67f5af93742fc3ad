"""Serving artifacts: a pure streaming step serialised with `jax.export` + flat parameters + a manifest.

    from wan_streamer_jax.export import write_artifact, load_server
    write_artifact("/tmp/art", step_fn=..., init_fn=..., params=..., num_slots=4, input_specs=...)
    server = load_server("/tmp/art")       # never imports wan_streamer_jax.model
    state = server.init_state(seed=0)
    state, outputs = server.step(state, inputs, active, reset)

`engine_artifact.export_engine(engine, path)` writes one for a `StreamingEngine`.
"""

from wan_streamer_jax.export.server import Server, load_server, read_manifest
from wan_streamer_jax.export.writer import FORMAT_VERSION, write_artifact

__all__ = ["Server", "load_server", "read_manifest", "write_artifact", "FORMAT_VERSION"]
