"""Fernet sealing of sensitive values, and the executor's `secrets.<NAME>`.

The key comes from `ORCH_SECRET_KEY` (settings.secret_key) or the file
`ORCH_SECRET_KEY_FILE` (settings.secret_key_file, default
`~/.config/orchestrator/secret.key`). When neither exists the file is created
with a new key and mode 0600: convenient for a developer machine; in a real
deployment give every role the same key explicitly, or tokens sealed by one
process cannot be unsealed by another. `ORCH_SECRET_KEY` may list several
comma-separated keys to rotate: the first seals, all of them unseal.

A sealed value is a Fernet token of the value's JSON; the recorded shape
around it (`{"$secret": token}`) is `orchestrator.core.sensitive`'s business.

Template secrets (`{{ secrets.NAME }}`) are read from `ORCH_SECRET_<NAME>`
environment variables, only by executors, and are never recorded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["Sealer", "SecretKeyError", "UnsealError", "load_keys", "secrets_from_env", "SECRET_ENV_PREFIX"]

SECRET_ENV_PREFIX = "ORCH_SECRET_"
# Settings that share the prefix but are not template secrets: never expose the key itself.
_NOT_SECRETS = {"KEY", "KEY_FILE"}

log = structlog.get_logger("orchestrator.secrets")


class SecretKeyError(RuntimeError):
    """No usable key: the message says where it looked and how to fix it."""


class UnsealError(ValueError):
    """A token that this process's key cannot open (or that is not a token)."""


def _check(key: str, where: str) -> bytes:
    raw = key.strip().encode("ascii", "replace")
    try:
        Fernet(raw)
    except (ValueError, TypeError):
        raise SecretKeyError(
            f"{where}: not a Fernet key (32 url-safe base64-encoded bytes); "
            "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        ) from None
    return raw


def _read_or_create(path: Path) -> bytes:
    try:
        return _check(path.read_text(encoding="ascii"), str(path))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretKeyError(f"{path}: cannot read the secret key: {exc}") from None
    key = Fernet.generate_key()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return _check(path.read_text(encoding="ascii"), str(path))
    except OSError as exc:
        raise SecretKeyError(
            f"{path}: cannot create the secret key file: {exc.strerror or exc} "
            "(set ORCH_SECRET_KEY or ORCH_SECRET_KEY_FILE)"
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    log.warning("secret_key_created", path=str(path), note="development default; share one key across roles")
    return key


def load_keys(settings: Any) -> list[bytes]:
    """The Fernet keys, newest first: `settings.secret_key` wins over the file."""
    configured = getattr(settings, "secret_key", None)
    if configured:
        keys = [_check(part, "ORCH_SECRET_KEY") for part in configured.split(",") if part.strip()]
        if keys:
            return keys
    return [_read_or_create(Path(settings.secret_key_file).expanduser())]


class Sealer:
    """`seal(value) -> token` (JSON, then Fernet) and `unseal(token) -> value`."""

    def __init__(self, keys: bytes | str | Sequence[bytes | str]) -> None:
        listed: list[bytes | str] = [keys] if isinstance(keys, (bytes, str)) else list(keys)
        if not listed:
            raise SecretKeyError("no secret key given")
        self._fernet = MultiFernet([Fernet(k) for k in listed])

    @classmethod
    def from_settings(cls, settings: Any) -> Sealer:
        return cls(load_keys(settings))

    @classmethod
    def generate(cls) -> Sealer:
        """A sealer with a fresh random key (tests, throwaway tooling)."""
        return cls(Fernet.generate_key())

    def seal(self, value: Any) -> str:
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self._fernet.encrypt(data).decode("ascii")

    def unseal(self, token: str) -> Any:
        if not isinstance(token, str):
            raise UnsealError(f"a sealed value must be a token string, got {type(token).__name__}")
        try:
            data = self._fernet.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise UnsealError(
                "cannot unseal a secret: it was sealed with another key "
                "(give every role the same ORCH_SECRET_KEY / ORCH_SECRET_KEY_FILE)"
            ) from None
        return json.loads(data)


def secrets_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`{NAME: value}` for every `ORCH_SECRET_<NAME>` (except the key settings)."""
    env = os.environ if env is None else env
    return {
        name[len(SECRET_ENV_PREFIX):]: value
        for name, value in env.items()
        if name.startswith(SECRET_ENV_PREFIX) and name[len(SECRET_ENV_PREFIX):] not in _NOT_SECRETS
        and name[len(SECRET_ENV_PREFIX):]
    }
