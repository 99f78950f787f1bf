"""Avro single-object encoding over the `.avsc` files in `schemas/`.

    codec = Codec.default()
    data = codec.encode(StartWorkflow(...))       # C3 01 | fingerprint | body
    msg = codec.decode(data, expect="commands")   # DecodeError if not a command

Pure Python + fastavro; no Kafka here.
"""

from __future__ import annotations

from .codec import KINDS, MAGIC, Codec, SchemaVersion, schema_dir
from .errors import DecodeError, EncodeError
from .fingerprint import fingerprint, fingerprint_hex, parsing_canonical_form

__all__ = [
    "KINDS",
    "MAGIC",
    "Codec",
    "DecodeError",
    "EncodeError",
    "SchemaVersion",
    "fingerprint",
    "fingerprint_hex",
    "known_fingerprints",
    "parsing_canonical_form",
    "schema_dir",
]


def known_fingerprints() -> tuple[bytes, ...]:
    """Fingerprints of every schema the default codec can decode."""
    return Codec.default().known_fingerprints
