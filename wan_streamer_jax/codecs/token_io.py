"""Moved: the token-record format lives in `data_pipelines.token_data` (one definition).

Kept so `from wan_streamer_jax.codecs import token_io` keeps working.
"""

from data_pipelines.token_data import (TokenDataSource, decode_record, encode_record, read_manifest,  # noqa: F401
                                       shard_done, shard_name, verify_shard, write_manifest, write_shard)
