"""API keys: who may call the API, and as whom.

Keys live outside the code, in the YAML file named by `ORCH_API_KEYS`:

    keys:
      - {name: alice, role: operator, sha256: <hex SHA-256 of the key>}

Only hashes are stored; `orchestrator api keys new NAME --role ROLE` makes a
random key, appends its hash and prints the key once. A request sends its key
as `Authorization: Bearer <key>` or `X-API-Key: <key>`; the key's SHA-256 is
compared with every stored hash in constant time. Roles: `reader` (GET
routes), `operator` (everything), `webhook` (POST /api/v1/webhooks/...
only). What a key does is recorded as `api:<name>` (requested_by,
registered_by).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError

__all__ = ["ApiKey", "KEYS_ENV", "KeyFileError", "KeyRing", "OPERATOR", "READER", "ROLES", "WEBHOOK", "allow",
           "hash_key", "load_key_ring", "new_key"]

KEYS_ENV = "ORCH_API_KEYS"
ROLES = ("reader", "operator", "webhook")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
HOW_TO_CREATE = ("create one with `orchestrator api keys new NAME --role operator --file FILE` "
                 f"and set {KEYS_ENV}=FILE")


class KeyFileError(ValueError):
    """The keys file is missing, unreadable or malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: str
    sha256: str

    @property
    def who(self) -> str:
        """What the API records as requested_by / registered_by for this key."""
        return f"api:{self.name}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """The configured keys; `authenticate` finds the one a request presented."""

    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self.keys = tuple(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def authenticate(self, presented: str) -> ApiKey | None:
        digest = hash_key(presented)
        found = None
        for key in self.keys:  # every hash compared, in constant time: no early exit to time
            if hmac.compare_digest(digest, key.sha256):
                found = key
        return found


def _parse(path: Path, data: Any) -> list[ApiKey]:
    if data is None:
        return []
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise KeyFileError(f"{path}: expected `keys:` with a list of {{name, role, sha256}} entries")
    keys: list[ApiKey] = []
    for i, entry in enumerate(entries):
        where = f"{path}: keys[{i}]"
        if not isinstance(entry, dict):
            raise KeyFileError(f"{where}: expected a mapping with name, role and sha256")
        name, role, digest = entry.get("name"), entry.get("role"), entry.get("sha256")
        if not isinstance(name, str) or not _NAME.match(name):
            raise KeyFileError(f"{where}: name: letters, digits and . _ @ - (at most 64), got {name!r}")
        if role not in ROLES:
            raise KeyFileError(f"{where} ({name}): role: one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(digest, str) or not _SHA256.match(digest.lower()):
            raise KeyFileError(f"{where} ({name}): sha256: the 64 hex digits of the key's SHA-256")
        if any(k.name == name for k in keys):
            raise KeyFileError(f"{where}: name {name!r} is used twice")
        keys.append(ApiKey(name, role, digest.lower()))
    return keys


def read_key_file(path: str | Path) -> list[ApiKey]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such keys file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read: {exc}") from None
    try:
        return _parse(path, yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise KeyFileError(f"{path}: not valid YAML: {exc}") from None


def load_key_ring(env: dict[str, str] | None = None) -> KeyRing:
    """The keys of the file ORCH_API_KEYS names; KeyFileError when there is none to use."""
    env = dict(os.environ if env is None else env)
    path = env.get(KEYS_ENV)
    if not path:
        raise KeyFileError(f"no API keys configured ({KEYS_ENV} is not set): {HOW_TO_CREATE}")
    keys = read_key_file(path)
    if not keys:
        raise KeyFileError(f"{path}: no keys in the file: {HOW_TO_CREATE}")
    return KeyRing(keys)


def new_key(path: str | Path, name: str, role: str, *, token: Callable[[], str] | None = None) -> str:
    """Make a random key for NAME with ROLE, append its hash to the keys file (created with mode
    0600 when missing) and return the key: it is never stored, only its hash."""
    path = Path(path)
    if role not in ROLES:
        raise KeyFileError(f"role: one of {', '.join(ROLES)}, got {role!r}")
    if not _NAME.match(name):
        raise KeyFileError(f"name: letters, digits and . _ @ - (at most 64), got {name!r}")
    existing = read_key_file(path) if path.exists() else []
    if any(k.name == name for k in existing):
        raise KeyFileError(f"{path}: a key named {name!r} exists already; choose another name")
    key = token() if token else "orch_" + secrets.token_urlsafe(32)
    entries = [{"name": k.name, "role": k.role, "sha256": k.sha256} for k in existing]
    entries.append({"name": name, "role": role, "sha256": hash_key(key)})
    text = ("# API keys of the orchestrator: only SHA-256 hashes; see docs/api.md\n"
            + yaml.safe_dump({"keys": entries}, sort_keys=False, default_flow_style=None))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
    return key


# -- the routes' dependencies -------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="`Authorization: Bearer <key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey", description="`X-API-Key: <key>`")


def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(_bearer),
           header_key: str | None = Security(_header)) -> ApiKey:
    """The key the request presented; 401 when there is none or it is unknown."""
    presented = header_key or (credentials.credentials if credentials is not None else None)
    if not presented:
        raise ApiError(401, "unauthenticated", "an API key is required: send `Authorization: Bearer <key>` "
                                               "or `X-API-Key: <key>`")
    key = request.app.state.context.keys.authenticate(presented)
    if key is None:
        raise ApiError(401, "unauthenticated", "unknown API key")
    return key


def allow(*roles: str) -> Callable[..., ApiKey]:
    """A dependency: the caller's key, when its role is one of `roles`; else 403."""

    def checked(key: ApiKey = Depends(caller)) -> ApiKey:
        if key.role not in roles:
            raise ApiError(403, "forbidden", f"key '{key.name}' has role {key.role}; this needs "
                                             f"{' or '.join(roles)}")
        return key

    return checked


READER = allow("reader", "operator")  # GET routes
OPERATOR = allow("operator")  # every write
WEBHOOK = allow("webhook", "operator")  # POST /api/v1/webhooks/...
