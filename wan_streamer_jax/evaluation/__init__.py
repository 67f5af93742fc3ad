"""Behaviour evaluation the Full-Duplex-Bench way (DESIGN §8): timelines, metrics, reference row, plots."""
