"""Avro single-object encoding of every message the orchestrator puts on Kafka.

Frame: `C3 01`, the writer schema's 8-byte little-endian CRC-64-AVRO
fingerprint, then the Avro binary body. The writer schema is found by its
fingerprint among the current envelope schemas and every released version
kept under `schemas/history/<kind>/v<N>.avsc`; older versions are resolved to
the current (reader) schema, so messages written by any released schema keep
decoding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from .errors import DecodeError, EncodeError
from .fingerprint import fingerprint, fingerprint_hex
from .mapping import Converters, build_converters

__all__ = ["KINDS", "MAGIC", "Codec", "SchemaVersion", "schema_dir"]

KINDS = ("commands", "results", "tasks", "events", "definitions", "external-events", "waits", "schedules")
MAGIC = b"\xc3\x01"
_HEADER = len(MAGIC) + 8
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


def schema_dir() -> Any:
    """The packaged `schemas/` directory (a Traversable; a Path in a normal install)."""
    return resources.files("orchestrator.codec") / "schemas"


@dataclass(frozen=True)
class SchemaVersion:
    """One known writer schema of one topic kind."""

    kind: str
    version: int | None  # history version; None for a current schema not yet kept in history/
    fingerprint: bytes
    current: bool  # the reader schema of its kind
    schema: dict

    @property
    def label(self) -> str:
        return f"{self.kind} v{self.version}" if self.version else f"{self.kind} (unreleased)"


def _strip_logical_types(schema: Any) -> Any:
    """Timestamps stay ints: read and write `long` where the file says timestamp-millis."""
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    return schema


class _Writer:
    """Decoding state for one fingerprint."""

    __slots__ = ("info", "writer", "reader", "unwrap")

    def __init__(self, info: SchemaVersion, writer: Any, reader: Any, unwrap: Callable[[dict], Any]):
        self.info, self.writer, self.reader, self.unwrap = info, writer, reader, unwrap


class Codec:
    """Encode message dataclasses to framed Avro and back. Thread-safe; build once."""

    def __init__(self, directory: Any = None):
        directory = schema_dir() if directory is None else directory
        if isinstance(directory, str):
            directory = Path(directory)
        self._versions: list[SchemaVersion] = []
        self._writers: dict[bytes, _Writer] = {}
        self._encoders: dict[type, tuple[str, str, bytes, Any, Callable[[Any], dict]]] = {}
        currents = {kind: json.loads((directory / f"{kind}.avsc").read_text("utf-8")) for kind in KINDS}
        self._conv: Converters = build_converters(list(currents.values()))
        for kind, current in currents.items():
            self._load_kind(kind, current, directory)

    @classmethod
    @cache
    def default(cls) -> Codec:
        """The shared codec over the packaged schemas (parsed once per process)."""
        return cls()

    # -- loading -------------------------------------------------------------

    def _load_kind(self, kind: str, current: dict, directory: Any) -> None:
        reader = parse_schema(_strip_logical_types(current))
        current_fp = fingerprint(current)
        history = directory / "history" / kind
        released: dict[int, dict] = {}
        if history.is_dir():
            for entry in history.iterdir():
                if m := _VERSION_FILE.match(entry.name):
                    released[int(m.group(1))] = json.loads(entry.read_text("utf-8"))
        wrap, unwrap = self._envelope(kind, current)
        current_version = None
        for version, schema in sorted(released.items()):
            fp = fingerprint(schema)
            is_current = fp == current_fp
            current_version = version if is_current else current_version
            info = SchemaVersion(kind, version, fp, is_current, schema)
            self._add(info, reader if is_current else parse_schema(_strip_logical_types(schema)), reader, unwrap)
        if current_version is None:  # changed but not yet released: still readable and writable
            self._add(SchemaVersion(kind, None, current_fp, True, current), reader, reader, unwrap)
        prefix = MAGIC + current_fp
        label = self._writers[current_fp].info.label
        for cls in wrap:
            self._encoders[cls] = (kind, label, prefix, reader, wrap[cls])

    def _add(self, info: SchemaVersion, writer: Any, reader: Any, unwrap: Callable) -> None:
        if info.fingerprint in self._writers:
            other = self._writers[info.fingerprint].info
            raise ValueError(f"schemas {other.label} and {info.label} have the same fingerprint")
        self._versions.append(info)
        self._writers[info.fingerprint] = _Writer(info, writer, None if writer is reader else reader, unwrap)

    def _envelope(self, kind: str, current: dict) -> tuple[dict[type, Callable], Callable[[dict], Any]]:
        """How objects of this kind are wrapped into / unwrapped from the envelope record."""
        conv = self._conv
        root = f"{current.get('namespace', '')}.{current['name']}".lstrip(".")
        if root in conv.decoders:  # the envelope is itself a message (RecordedEvent)
            cls = next(c for c, n in conv.fullnames.items() if n == root)
            return {cls: conv.encoders[cls]}, conv.decoders[root]
        unions = [f for f in current["fields"] if isinstance(f["type"], list)
                  and all(isinstance(b, dict) and b.get("type") == "record" for b in f["type"])]
        if len(unions) != 1:  # envelope fields added later must have defaults; they are not mapped
            raise ValueError(f"{kind} envelope must have exactly one field that is a union of records")
        field = unions[0]["name"]
        names = {f"{current['namespace']}.{b['name']}" for b in unions[0]["type"]}
        wrap = {}
        for cls, full in conv.fullnames.items():
            if full in names:
                enc = conv.encoders[cls]
                wrap[cls] = lambda obj, _enc=enc, _full=full: {field: (_full, _enc(obj))}
        decode_union = conv.decode_union
        return wrap, lambda record: decode_union(record[field])

    # -- the API -------------------------------------------------------------

    @property
    def versions(self) -> tuple[SchemaVersion, ...]:
        """Every known writer schema, current and historical."""
        return tuple(self._versions)

    @property
    def known_fingerprints(self) -> tuple[bytes, ...]:
        return tuple(self._writers)

    def current_fingerprint(self, kind: str) -> bytes:
        return next(v.fingerprint for v in self._versions if v.kind == kind and v.current)

    def kind_of(self, obj_or_type: Any) -> str:
        """The topic kind ("commands", "events", ...) a message object or type travels on."""
        cls = obj_or_type if isinstance(obj_or_type, type) else type(obj_or_type)
        try:
            return self._encoders[cls][0]
        except KeyError:
            raise TypeError(f"{cls.__name__} is not a message type") from None

    def encode(self, obj: Any) -> bytes:
        """Framed Avro bytes of a message dataclass, written with its current schema."""
        try:
            _, label, prefix, schema, wrap = self._encoders[type(obj)]
        except KeyError:
            raise TypeError(f"cannot encode {type(obj).__name__}: not a message type") from None
        out = BytesIO()
        out.write(prefix)
        try:
            schemaless_writer(out, schema, wrap(obj))
        except EncodeError:
            raise
        except Exception as exc:  # fastavro raises TypeError, ValueError, AttributeError...
            raise EncodeError(f"cannot encode {type(obj).__name__} with schema {label}: {exc}") from None
        return out.getvalue()

    def decode(self, data: bytes, expect: str | None = None) -> Any:
        """The message dataclass in `data`; `expect` (a topic kind) rejects other envelopes."""
        if data is None:
            raise DecodeError("no value (a tombstone?)")
        if type(data) is not bytes:
            data = bytes(data)
        if data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (missing C3 01 marker)")
        if len(data) < _HEADER:
            raise DecodeError(f"truncated frame: {len(data)} bytes, the header alone takes {_HEADER}")
        entry = self._writers.get(data[2:_HEADER])
        if entry is None:
            raise DecodeError(f"unknown schema fingerprint {fingerprint_hex(data[2:_HEADER])}")
        info = entry.info
        if expect is not None and info.kind != expect:
            if expect not in KINDS:
                raise ValueError(f"unknown topic kind {expect!r}; one of {', '.join(KINDS)}")
            raise DecodeError(f"wrong envelope: expected a {expect!r} message, got one of kind {info.kind!r} "
                              f"(schema {info.label})")
        buf = BytesIO(data)
        buf.seek(_HEADER)
        try:
            record = schemaless_reader(buf, entry.writer, entry.reader, return_record_name=True)
        except Exception as exc:  # EOFError, IndexError, UnicodeDecodeError, SchemaResolutionError...
            reason = str(exc) or type(exc).__name__
            raise DecodeError(f"truncated/invalid body for schema {info.label}: {reason}") from None
        if buf.tell() != len(data):
            raise DecodeError(
                f"truncated/invalid body for schema {info.label}: {len(data) - buf.tell()} trailing bytes"
            )
        return entry.unwrap(record)
