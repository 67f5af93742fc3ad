"""One module per `launch/bench.py --what=NAME`; each exposes `run(cfg) -> dict`."""
