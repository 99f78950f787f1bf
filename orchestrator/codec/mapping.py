"""Dataclasses <-> the dicts fastavro reads and writes, one converter pair per
Avro record, generated once from the current schema and the dataclass fields.

Field rules (checked when the converters are built, so a schema and its
dataclass cannot drift apart silently):

- dataclass field `x` and Avro field `x_json` (string): JSON text, encoded
  compact with sorted keys;
- Avro array field: a tuple in Python;
- Avro union of records (`RecordedEvent.event`): a nested dataclass;
- anything else is copied as is (timestamps stay `int` epoch ms).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

from orchestrator.core import events as _events
from orchestrator.core import messages as _messages

from .errors import DecodeError, EncodeError

__all__ = ["RECORD_TYPES", "Converters", "iter_records", "build_converters", "dumps_json"]

RECORD_TYPES: dict[str, type] = {
    name: obj
    for module in (_events, _messages)
    for name in module.__all__
    if dataclasses.is_dataclass(obj := getattr(module, name)) and isinstance(obj, type)
}

_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False).encode
_dumps_ascii = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=True, allow_nan=False).encode
_loads = json.loads


def dumps_json(value: Any, field: str = "value") -> str:
    """JSON text as it travels in `*_json` fields (compact, sorted keys)."""
    try:
        text = _dumps(value)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # A lone surrogate (read from a client's "\ud800" escape) has no UTF-8 form:
                # escaped, the text is valid UTF-8 and reads back the same value.
                text = _dumps_ascii(value)
        return text
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"JSON field {field} cannot be encoded: {exc}") from None


def _loads_json(text: str, field: str) -> Any:
    try:
        return _loads(text)
    except ValueError as exc:
        raise DecodeError(f"JSON field {field} is not valid JSON: {exc}") from None


def _fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def iter_records(schema: Any, namespace: str | None = None) -> Iterator[tuple[str, dict]]:
    """Every record defined inline in `schema`, as (full name, definition)."""
    if isinstance(schema, list):
        for branch in schema:
            yield from iter_records(branch, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            full = _fullname(schema["name"], schema.get("namespace", namespace))
            yield full, schema
            inner_ns = full.rpartition(".")[0] or None
            for field in schema["fields"]:
                yield from iter_records(field["type"], inner_ns)
        elif kind == "array":
            yield from iter_records(schema["items"], namespace)
        elif kind == "map":
            yield from iter_records(schema["values"], namespace)
        elif isinstance(kind, (dict, list)):
            yield from iter_records(kind, namespace)


def _is_record_union(avro_type: Any) -> bool:
    return isinstance(avro_type, list) and any(
        isinstance(b, dict) and b.get("type") == "record" for b in avro_type
    )


@dataclasses.dataclass
class Converters:
    """Per record full name: encoder (dataclass -> dict) and decoder (dict -> dataclass)."""

    encoders: dict[type, Callable[[Any], dict]] = dataclasses.field(default_factory=dict)
    decoders: dict[str, Callable[[dict], Any]] = dataclasses.field(default_factory=dict)
    fullnames: dict[type, str] = dataclasses.field(default_factory=dict)

    def encode_union(self, value: Any) -> tuple[str, dict]:
        cls = type(value)
        try:
            return self.fullnames[cls], self.encoders[cls](value)
        except KeyError:
            raise EncodeError(f"{cls.__name__} has no Avro record") from None

    def decode_union(self, value: tuple[str, dict]) -> Any:
        name, body = value
        return self.decoders[name](body)


def build_converters(schemas: list[Any], conv: Converters | None = None) -> Converters:
    """Generate converters for every record of `schemas` that has a dataclass."""
    conv = conv or Converters()
    for schema in schemas:
        for full, record in iter_records(schema):
            cls = RECORD_TYPES.get(full.rpartition(".")[2])
            if cls is None or full in conv.decoders:
                continue
            enc, dec = _generate(full, record, cls, conv)
            conv.encoders[cls], conv.decoders[full], conv.fullnames[cls] = enc, dec, full
    return conv


def _generate(full: str, record: dict, cls: type, conv: Converters) -> tuple[Callable, Callable]:
    avro_fields = {f["name"]: f["type"] for f in record["fields"]}
    enc_items, dec_items, used = [], [], set()
    for f in dataclasses.fields(cls):
        name = f.name
        if f"{name}_json" in avro_fields:
            avro = f"{name}_json"
            enc_items.append(f"{avro!r}: _dumps_json(o.{name}, {avro!r})")
            dec_items.append(f"{name}=_loads_json(d[{avro!r}], {avro!r})")
        elif name in avro_fields:
            avro, avro_type = name, avro_fields[name]
            if isinstance(avro_type, dict) and avro_type.get("type") == "array":
                enc_items.append(f"{avro!r}: list(o.{name})")
                dec_items.append(f"{name}=tuple(d[{avro!r}])")
            elif _is_record_union(avro_type):
                enc_items.append(f"{avro!r}: _encode_union(o.{name})")
                dec_items.append(f"{name}=_decode_union(d[{avro!r}])")
            else:
                enc_items.append(f"{avro!r}: o.{name}")
                dec_items.append(f"{name}=d[{avro!r}]")
        else:
            raise TypeError(f"{cls.__name__}.{name} has no field {name} or {name}_json in Avro record {full}")
        used.add(avro)
    if extra := set(avro_fields) - used:
        raise TypeError(f"Avro record {full} has fields {sorted(extra)} that {cls.__name__} lacks")
    source = (
        f"def encode(o):\n    return {{{', '.join(enc_items)}}}\n"
        f"def decode(d):\n    return cls({', '.join(dec_items)})\n"
    )
    namespace = {
        "cls": cls,
        "_dumps_json": dumps_json,
        "_loads_json": _loads_json,
        "_encode_union": conv.encode_union,
        "_decode_union": conv.decode_union,
    }
    exec(compile(source, f"<codec {full}>", "exec"), namespace)  # noqa: S102 - generated from schema field names
    return namespace["encode"], namespace["decode"]
