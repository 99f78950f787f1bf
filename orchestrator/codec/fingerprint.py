"""Schema fingerprints: CRC-64-AVRO (Rabin) of the Parsing Canonical Form.

These are the 8 bytes that follow the `C3 01` marker of Avro single-object
encoding, little-endian, exactly as the Avro specification defines them, so
any Avro library can find the writer schema of a message from the `.avsc`
files alone.
"""

from __future__ import annotations

import json
from typing import Any

from fastavro.schema import to_parsing_canonical_form

__all__ = ["EMPTY", "crc64_avro", "fingerprint", "fingerprint_hex", "parsing_canonical_form"]

EMPTY = 0xC15D213AA4D7A795  # the Avro spec's CRC-64-AVRO seed ("EMPTY")


def _table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    """The 64-bit Rabin fingerprint the Avro spec calls CRC-64-AVRO."""
    fp = EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def parsing_canonical_form(schema: Any) -> str:
    """Parsing Canonical Form of a schema given as JSON text, dict or list."""
    if isinstance(schema, (bytes, bytearray)):
        schema = schema.decode("utf-8")
    if isinstance(schema, str):
        schema = json.loads(schema)
    return to_parsing_canonical_form(schema)


def fingerprint(schema: Any) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of `schema`'s PCF."""
    pcf = parsing_canonical_form(schema)
    return crc64_avro(pcf.encode("utf-8")).to_bytes(8, "little")


def fingerprint_hex(fp: bytes) -> str:
    """`0x...`: the fingerprint as the 64-bit number it is (bytes are little-endian)."""
    return f"0x{int.from_bytes(fp, 'little'):016x}"
