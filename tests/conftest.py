"""Test set-up: 8 fake CPU devices for sharding tests; absl flags parsed for Grain workers."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import absl.flags  # noqa: E402
import pytest  # noqa: E402

absl.flags.FLAGS.mark_as_parsed()


def pytest_configure(config):
  config.addinivalue_line("markers", "accelerator: needs a GPU or TPU; skipped on CPU")
  config.addinivalue_line("markers", "slow: longer CPU test (still part of the suite)")


def pytest_collection_modifyitems(config, items):
  import jax
  has_accel = jax.default_backend() in ("gpu", "tpu")
  skip = pytest.mark.skip(reason="needs a GPU/TPU backend; this machine has CPU only")
  for item in items:
    if "accelerator" in item.keywords and not has_accel:
      item.add_marker(skip)
