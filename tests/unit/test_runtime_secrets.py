"""Fernet key management, sealing, and template secrets from the environment."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from orchestrator.config import Settings
from orchestrator.runtime.secrets import Sealer, SecretKeyError, UnsealError, load_keys, secrets_from_env


def test_seal_round_trips_json_values() -> None:
    sealer = Sealer.generate()
    for value in ("hunter2", 42, {"a": [1, None, "ü"]}, None):
        token = sealer.seal(value)
        assert isinstance(token, str) and "hunter2" not in token
        assert sealer.unseal(token) == value


def test_another_key_cannot_unseal() -> None:
    with pytest.raises(UnsealError, match="sealed with another key"):
        Sealer.generate().unseal(Sealer.generate().seal("x"))
    with pytest.raises(UnsealError):
        Sealer.generate().unseal("not a token")


def test_the_configured_key_wins_and_rotation_keeps_old_tokens(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = Sealer(old).seal("v")
    settings = Settings(secret_key=f"{new},{old}", secret_key_file=tmp_path / "unused.key")
    sealer = Sealer.from_settings(settings)
    assert sealer.unseal(token) == "v"
    assert Sealer(new).unseal(sealer.seal("w")) == "w"  # the first key seals
    assert not (tmp_path / "unused.key").exists()


def test_key_file_is_created_0600_once(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "secret.key"
    settings = Settings(secret_key_file=path)
    first = load_keys(settings)
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keys(settings) == first
    assert Sealer.from_settings(settings).unseal(Sealer(first).seal(1)) == 1


def test_bad_keys_are_explained(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match="ORCH_SECRET_KEY: not a Fernet key"):
        load_keys(Settings(secret_key="short"))
    path = tmp_path / "secret.key"
    path.write_text("garbage\n")
    with pytest.raises(SecretKeyError, match=f"{path}: not a Fernet key"):
        load_keys(Settings(secret_key_file=path))


def test_template_secrets_come_from_the_environment_but_never_the_key() -> None:
    env = {"ORCH_SECRET_API_TOKEN": "t", "ORCH_SECRET_KEY": "k", "ORCH_SECRET_KEY_FILE": "f",
           "ORCH_SECRET_": "empty name", "OTHER": "x"}
    assert secrets_from_env(env) == {"API_TOKEN": "t"}
