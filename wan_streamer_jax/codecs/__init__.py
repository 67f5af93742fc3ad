"""Causal streaming codecs: causal conv + state, FSQ, audio codec, video codec, losses, metrics.

    from wan_streamer_jax.codecs import AudioCodec, VideoCodec
    codec = AudioCodec(cfg.audio, rngs=nnx.Rngs(0))
    codes = codec.encode(wave)                   # [B, samples] f32 -> [B, frames, Q] i32
    state = codec.init_state(batch)
    state, codes_u = codec.encode_step(state, wave_unit)   # one 160 ms unit
    fns, params = codec.functional()             # pure steps for scan / jit / export
"""

from wan_streamer_jax.codecs.audio_codec import AudioCodec
from wan_streamer_jax.codecs.base import CodecFns, CodecState
from wan_streamer_jax.codecs.video_codec import VideoCodec

__all__ = ["AudioCodec", "VideoCodec", "CodecFns", "CodecState"]
