"""Full-duplex streaming: a pool of session slots, one jitted step per 160 ms unit, scans over recordings.

    from wan_streamer_jax.streaming import StreamingEngine, SamplingConfig, run_stream, run_teacher_forced

See STREAMING_API (engine.py docstring): `engine.step(params, state, inputs, active, reset)`.
"""

from wan_streamer_jax.streaming.engine import (TURN_SILENT, TURN_SPEAKING, TURN_YIELDED,
                                               StreamingEngine)
from wan_streamer_jax.streaming.run import run_stream, run_teacher_forced
from wan_streamer_jax.streaming.sampling import SamplingConfig
from wan_streamer_jax.streaming.state import StreamingState

__all__ = ["StreamingEngine", "SamplingConfig", "StreamingState", "run_stream", "run_teacher_forced",
           "TURN_SILENT", "TURN_SPEAKING", "TURN_YIELDED"]
