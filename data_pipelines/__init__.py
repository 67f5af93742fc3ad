"""Synthetic corpus, TFDS builders and Grain pipelines."""
