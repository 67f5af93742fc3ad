"""Block-causal attention: `reference` (dense oracle), `xla` (chunked), `pallas` (tiles)."""

from wan_streamer_jax.kernels.api import block_causal_attention, prepare_attention, resolve_impl
from wan_streamer_jax.kernels.mask import visible
from wan_streamer_jax.kernels.metadata import AttentionMetadata
from wan_streamer_jax.kernels.reference import reference_block_causal_attention

__all__ = ["AttentionMetadata", "block_causal_attention", "prepare_attention", "resolve_impl",
           "reference_block_causal_attention", "visible"]
