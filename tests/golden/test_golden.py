"""Every golden message of every schema version must keep decoding to the same value.

The `.bin` files are bytes released versions wrote; they are never rewritten.
A later schema may add fields (with defaults): the decoded message then has
fields the `.json` does not list, and those must hold their defaults.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from orchestrator.codec import Codec, fingerprint_hex
from orchestrator.codec.mapping import RECORD_TYPES
from tests.golden.make_corpus import MESSAGES_DIR, entries, to_jsonable

BINS = sorted(MESSAGES_DIR.glob("v*/*.bin"))


def _defaults(type_name: str) -> dict:
    cls = RECORD_TYPES[type_name]
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = to_jsonable(f.default)
    return out


def _assert_matches(expected, actual, where: str) -> None:
    if isinstance(expected, dict) and "$type" in expected:
        assert isinstance(actual, dict) and actual.get("$type") == expected["$type"], where
        defaults = _defaults(expected["$type"])
        for key, value in actual.items():
            if key in expected:
                _assert_matches(expected[key], value, f"{where}.{key}")
            else:  # added by a later schema version: must hold its default
                assert key in defaults and value == defaults[key], f"{where}.{key}: new field without default"
        missing = set(expected) - set(actual)
        assert not missing, f"{where}: fields {sorted(missing)} no longer decoded"
    else:
        assert actual == expected, where


def test_corpus_is_not_empty():
    assert BINS, f"no golden messages under {MESSAGES_DIR}; run tests/golden/make_corpus.py"


@pytest.mark.parametrize("path", BINS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_message_decodes(path: Path):
    codec = Codec.default()
    doc = json.loads(path.with_suffix(".json").read_text("utf-8"))
    data = path.read_bytes()
    assert data[:2] == b"\xc3\x01"
    assert fingerprint_hex(data[2:10]) == doc["fingerprint"]
    known = {(v.kind, v.version): v.fingerprint for v in codec.versions}
    assert known.get((doc["kind"], doc["schema_version"])) == data[2:10], "released schema missing from history/"
    decoded = codec.decode(data, expect=doc["kind"])
    _assert_matches(doc["message"], to_jsonable(decoded), path.stem)


def test_every_released_version_has_golden_messages():
    codec = Codec.default()
    for version in codec.versions:
        if version.version is not None:
            folder = MESSAGES_DIR / f"v{version.version}"
            docs = [json.loads(p.read_text("utf-8")) for p in folder.glob("*.json")]
            assert any(d["kind"] == version.kind for d in docs), (
                f"no golden messages for {version.label}: run tests/golden/make_corpus.py")


def test_current_encoding_is_byte_stable():
    """Encoding the corpus values today gives the stored bytes of the current versions."""
    for path, data, _doc in entries(Codec.default()):
        assert path.exists(), f"{path} missing: run tests/golden/make_corpus.py"
        assert path.read_bytes() == data, f"{path}: the same value now encodes differently"
