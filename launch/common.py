"""What every launcher shares: the config flag (paths or shipped names), quiet logs, `error: ...` exits.

    _CONFIG = common.config_flag("tiny")
    def main(argv): ...
    def run(): common.run(main)

- `--config` takes a file path or the name of a shipped config (`tiny`,
  `configs/small.py`), so the console scripts work from any directory.
- Logs are quiet by default: INFO lines of other libraries (Orbax, TFDS, the
  JAX backend probe) are dropped, this project's INFO lines and every warning
  are kept; `--verbose` shows everything (launchers also hide TFDS's
  "Downloading and preparing" prints: nothing is downloaded).
- A `ConfigError` (a bad config value or a refused setup) ends the run with one
  line `error: ...` on stderr and exit status 2 (`--verbose` shows the traceback).
"""

from __future__ import annotations

import logging as pylogging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_VERBOSE = flags.DEFINE_bool("verbose", False, "Show every library's INFO logs and full tracebacks.")

_OURS = tuple(os.sep + p + os.sep for p in ("wan_streamer_jax", "launch", "data_pipelines"))


def verbose() -> bool:
  return _VERBOSE.value


def config_flag(default: str, help_text: str = "Config file or shipped config name (tiny, small, ...).",
                name: str = "config"):
  """`--config` as an ml_collections config file flag whose value may also be a shipped config's name."""
  from wan_streamer_jax.config import resolve_config_path
  return config_flags.DEFINE_config_file(name, resolve_config_path(default), help_text)


def _resolve_argv(argv: list[str]) -> list[str]:
  from wan_streamer_jax.config import ConfigError, resolve_config_path
  out = []
  for i, a in enumerate(argv):
    if i and a.startswith("--config=") and ":" not in a[len("--config="):]:
      try:
        a = "--config=" + resolve_config_path(a[len("--config="):])
      except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    out.append(a)
  return out


class _QuietFilter(pylogging.Filter):
  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or any(p in record.pathname for p in _OURS)


def quiet_logs() -> None:
  """Drops other libraries' INFO records (absl and Python logging); keeps ours and all warnings."""
  from absl import logging as absl_logging
  f = _QuietFilter()
  absl_logging.get_absl_handler().addFilter(f)
  for h in pylogging.getLogger().handlers:
    h.addFilter(f)
  for name in ("jax._src.xla_bridge", "absl"):
    pylogging.getLogger(name).addFilter(f)


def run(main) -> None:
  """`app.run(main)` with the config flag resolved, quiet logs and one-line config errors."""
  from wan_streamer_jax.config import ConfigError

  def wrapped(argv):
    if not _VERBOSE.value:
      quiet_logs()
    try:
      return main(argv)
    except ConfigError as e:
      if _VERBOSE.value:
        raise
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)

  app.run(wrapped, argv=_resolve_argv(sys.argv))
