"""Sensitive input: which fields, sealing for the executor, redaction for records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.core.sensitive import (
    REDACTED,
    is_sealed,
    is_sensitive_name,
    redact,
    redact_message,
    seal_values,
    sensitive_paths,
    sensitive_values,
    unseal_values,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "username": {"type": "string"},
        "password": {"type": "string", "minLength": 8},
        "pin": {"type": "string", "format": "password"},
        "db": {"type": "object", "properties": {"dsn": {"type": "string", "writeOnly": True}, "host": {}}},
        "keys": {"type": "array", "items": {"type": "object", "properties": {"k": {"writeOnly": True}}}},
    },
}
VALUE = {
    "username": "bob",
    "password": "hunter22",
    "pin": "1234",
    "db": {"dsn": "pg://u:p@h/db", "host": "h"},
    "keys": [{"k": "k1"}, {"k": "k2"}],
    "extra": {"apiKey": "ak", "refresh_token": None, "list": [{"client_secret": {"a": 1}}]},
}


def fake_seal(value: Any) -> str:  # stands in for Fernet: reversible, not plaintext
    return "sealed:" + json.dumps(value)[::-1]


def fake_unseal(token: str) -> Any:
    return json.loads(token.removeprefix("sealed:")[::-1])


@pytest.mark.parametrize(
    "name",
    ["password", "Password", "userPassword", "password_hash", "newpassword", "passwd", "db_secret", "MY_SECRET",
     "accessToken", "refresh-token", "api_key", "apiKey", "APIKey", "x-api-key", "apikey", "credential",
     "aws_credentials"],
)  # fmt: skip
def test_sensitive_names(name: str) -> None:
    assert is_sensitive_name(name)


@pytest.mark.parametrize("name", ["username", "email", "tokenizer", "secretary", "keys", "monkey", "api", "key"])
def test_ordinary_names(name: str) -> None:
    assert not is_sensitive_name(name)


def test_sensitive_paths_from_schema() -> None:
    assert sensitive_paths(SCHEMA) == {("password",), ("pin",), ("db", "dsn"), ("keys", "*", "k")}
    assert sensitive_paths({"allOf": [{"properties": {"x": {"format": "password"}}}]}) == {("x",)}
    assert sensitive_paths({}) == set() and sensitive_paths(None) == set()


def test_seal_unseal_round_trip() -> None:
    sealed = seal_values(VALUE, SCHEMA, fake_seal)
    assert sealed["username"] == "bob" and sealed["db"]["host"] == "h"
    for secret in (sealed["password"], sealed["pin"], sealed["db"]["dsn"], sealed["keys"][1]["k"],
                   sealed["extra"]["apiKey"], sealed["extra"]["list"][0]["client_secret"]):  # fmt: skip
        assert is_sealed(secret)
    assert sealed["extra"]["refresh_token"] is None  # nothing to hide
    assert "hunter22" not in json.dumps(sealed)
    assert seal_values(sealed, SCHEMA, lambda _v: pytest.fail("sealed twice")) == sealed
    assert unseal_values(sealed, fake_unseal) == VALUE
    assert VALUE["password"] == "hunter22"  # inputs are not mutated


def test_unseal_keeps_falsy_plaintexts() -> None:
    assert unseal_values({"password": {"$secret": "t"}}, lambda _t: None) == {"password": None}
    assert unseal_values({"password": {"$secret": "t"}}, lambda _t: "") == {"password": ""}


def test_redact() -> None:
    sealed = seal_values(VALUE, SCHEMA, fake_seal)
    assert redact(sealed) == redact(VALUE, SCHEMA)
    shown = redact(VALUE, SCHEMA)
    assert shown["password"] == shown["pin"] == shown["db"]["dsn"] == REDACTED
    assert shown["keys"] == [{"k": REDACTED}, {"k": REDACTED}]
    assert shown["extra"] == {"apiKey": REDACTED, "refresh_token": None, "list": [{"client_secret": REDACTED}]}
    assert shown["username"] == "bob"
    assert redact(VALUE)["pin"] == "1234"  # without the schema only names and seals are known
    assert redact("plain") == "plain" and redact([{"token": "t"}]) == [{"token": REDACTED}]


def test_redact_message() -> None:
    secrets = sensitive_values(VALUE, SCHEMA)
    assert {"hunter22", "1234", "pg://u:p@h/db", "k1", "ak", "1"} <= set(secrets)
    assert "bob" not in secrets
    text = 'HTTP 400: {"password": "hunter22", "dsn": "pg://u:p@h\\/db"} pin=1234'
    assert redact_message(text, ["hunter22", "1234", 'q"uote', None, ""]) == (
        'HTTP 400: {"password": "***", "dsn": "pg://u:p@h\\/db"} pin=***'
    )
    assert redact_message('said "a \\"q\\" b"', ['a "q" b']) == 'said "***"'
    assert redact_message("abc", ["b"], min_length=2) == "abc"
