"""Which input values are secrets, and the shapes that keep them out of records.

A value is sensitive when its JSON Schema property says `writeOnly: true` or
`format: password`, or when its field name reads like a secret (password,
passwd, secret, token, api_key/apiKey/apikey, credential; as a word of a
snake_case, kebab-case or camelCase name, plurals included; "password" also
inside a word, e.g. "newpassword"). Sensitive values are *sealed* before they
are recorded: `{"$secret": "<token>"}`; only executors unseal. Projections and
logs *redact* them to "***".

Pure: encryption is the `seal`/`unseal` callables the runtime passes in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

__all__ = [
    "SEALED_KEY",
    "REDACTED",
    "is_sensitive_name",
    "is_sealed",
    "sensitive_paths",
    "seal_values",
    "unseal_values",
    "redact",
    "sensitive_values",
    "redact_message",
]

SEALED_KEY = "$secret"
REDACTED = "***"
ANY_ITEM = "*"  # path segment for every element of an array

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "secret", "secrets", "token", "tokens",
    "credential", "credentials", "apikey", "apikeys",
})  # fmt: skip
_MAX_DEPTH = 64

Path = tuple[str, ...]
_DESCEND: Any = object()  # a `leaf` result meaning "not replaced: look inside"


@lru_cache(maxsize=8192)
def is_sensitive_name(name: str) -> bool:
    """True for names like password, client_secret, accessToken, X-API-Key, apikey."""
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    if "password" in lowered or "passwd" in lowered:
        return True
    words = [w.lower() for w in _WORDS.findall(name)]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(a == "api" and b in ("key", "keys") for a, b in zip(words, words[1:]))


def is_sealed(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(SEALED_KEY), str)


def sensitive_paths(input_schema: Any) -> set[Path]:
    """Paths of the schema's sensitive properties, e.g. {("password",), ("db", "token")}.

    Marked by `writeOnly: true` / `format: password`, or by a secret-like
    property name. Nested `properties`, array `items` (segment "*") and
    allOf/anyOf/oneOf branches are followed; `$ref` is not resolved.
    """
    found: set[Path] = set()
    _schema_walk(input_schema, (), found, 0)
    return found


def _schema_walk(schema: Any, prefix: Path, found: set[Path], depth: int) -> None:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            path = (*prefix, str(name))
            if _marked(sub) or is_sensitive_name(str(name)):
                found.add(path)  # the whole value is a secret, nested parts included
            else:
                _schema_walk(sub, path, found, depth + 1)
    if isinstance(schema.get("items"), Mapping):
        _schema_walk(schema["items"], (*prefix, ANY_ITEM), found, depth + 1)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key) or ():
            _schema_walk(sub, prefix, found, depth + 1)


def _marked(schema: Any) -> bool:
    return isinstance(schema, Mapping) and (schema.get("writeOnly") is True or schema.get("format") == "password")


def _matches(path: Path, patterns: set[Path]) -> bool:
    return any(
        len(p) == len(path) and all(a == ANY_ITEM or a == b for a, b in zip(p, path)) for p in patterns
    )


def _is_secret_at(path: Path, patterns: set[Path]) -> bool:
    return bool(path) and (is_sensitive_name(path[-1]) or _matches(path, patterns))


def _map(value: Any, path: Path, leaf: Callable[[Any, Path], Any], depth: int = 0) -> Any:
    """Rebuild `value`, letting `leaf` replace a node (any result but _DESCEND) before descending."""
    if depth > _MAX_DEPTH:
        return value
    replaced = leaf(value, path)
    if replaced is not _DESCEND:
        return replaced
    # An unchanged dict or list comes back as itself: most values hold no
    # secret, and the projector and executor redact every payload.
    if isinstance(value, Mapping):
        mapped = {k: _map(v, (*path, str(k)), leaf, depth + 1) for k, v in value.items()}
        same = type(value) is dict and all(mapped[k] is v for k, v in value.items())
        return value if same else mapped
    if isinstance(value, (list, tuple)):
        items = [_map(v, (*path, ANY_ITEM), leaf, depth + 1) for v in value]
        same = type(value) is list and all(a is b for a, b in zip(items, value))
        return value if same else items
    return value


def seal_values(value: Any, schema: Any, seal: Callable[[Any], str]) -> Any:
    """Replace every sensitive plaintext value with `{"$secret": seal(value)}`.

    Already sealed values and nulls are left as they are, so sealing twice
    (client, then decider) is harmless.
    """
    patterns = sensitive_paths(schema)

    def leaf(node: Any, path: Path) -> Any:
        if is_sealed(node):
            return node
        if node is not None and _is_secret_at(path, patterns):
            return {SEALED_KEY: seal(node)}
        return _DESCEND

    return _map(value, (), leaf)


def unseal_values(value: Any, unseal: Callable[[str], Any]) -> Any:
    """Replace every `{"$secret": token}` with `unseal(token)` (executors only)."""
    return _map(value, (), lambda node, _path: unseal(node[SEALED_KEY]) if is_sealed(node) else _DESCEND)


def redact(value: Any, schema: Any = None) -> Any:
    """Sealed values, secret-named fields and (given a schema) its sensitive paths -> "***"."""
    patterns = sensitive_paths(schema) if schema is not None else set()

    def leaf(node: Any, path: Path) -> Any:
        if is_sealed(node) or (node is not None and _is_secret_at(path, patterns)):
            return REDACTED
        return _DESCEND

    return _map(value, (), leaf)


def sensitive_values(value: Any, schema: Any = None) -> list[str]:
    """The plaintext strings at sensitive places in `value`, for `redact_message`."""
    patterns = sensitive_paths(schema) if schema is not None else set()
    found: list[str] = []

    def collect(node: Any, _path: Path) -> Any:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            found.append(str(node))
        return _DESCEND

    def leaf(node: Any, path: Path) -> Any:
        if not is_sealed(node) and node is not None and _is_secret_at(path, patterns):
            _map(node, path, collect)
            return node
        return _DESCEND

    _map(value, (), leaf)
    return found


def redact_message(text: str, secrets: Iterable[Any], *, min_length: int = 1) -> str:
    """`text` with every occurrence of each secret (and its JSON-escaped form) -> "***".

    Every non-empty secret is redacted by default, even one character long
    (safe, if unreadable); pass `min_length` to leave very short ones alone.
    """
    forms: set[str] = set()
    for secret in secrets:
        if secret is None:
            continue
        plain = secret if isinstance(secret, str) else str(secret)
        if len(plain) >= max(min_length, 1):
            forms.add(plain)
            forms.add(json.dumps(plain, ensure_ascii=False)[1:-1])
            forms.add(json.dumps(plain)[1:-1])
    for form in sorted(forms, key=len, reverse=True):  # longest first: no partial leftovers
        text = text.replace(form, REDACTED)
    return text
