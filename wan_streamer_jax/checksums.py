"""SHA-256 of a file: the one checksum of token shards (`data_pipelines/token_data.py`) and serving
artifacts (`export/writer.py` writes it, `export/server.py` verifies it)."""

import hashlib


def file_sha256(path: str) -> str:
  """Hex SHA-256 of the file at `path`, read in 1 MiB blocks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()
