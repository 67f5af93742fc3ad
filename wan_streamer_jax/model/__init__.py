"""Flax NNX model: layers, RoPE, Transformer, losses."""
