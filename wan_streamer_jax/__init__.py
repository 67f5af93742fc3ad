"""wan_streamer_jax: native-streaming, full-duplex audio-video-text Transformer in JAX."""

__version__ = "0.1.0"
