"""absl entry points (`python -m launch.NAME --config=configs/NAME.py`)."""
