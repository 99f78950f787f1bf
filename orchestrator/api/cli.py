"""`orchestrator api`: serve the HTTP API (and the web console); `orchestrator api keys new`: make a key.

The server refuses to start without keys (ORCH_API_KEYS names the file) and
says how to make one. It uses the same environment as every role: Kafka,
PostgreSQL and its projection schema (ORCH_DATABASE_SCHEMA), topic prefix,
secret key, ORCH_TEMPLATES, logging.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..cli.common import CliError, get_settings

__all__ = ["api"]

DEFAULT_PORT = 8080


@click.group("api", invoke_without_command=True)
@click.option("--host", default=lambda: os.environ.get("ORCH_API_HOST", "127.0.0.1"),
              help="Address to listen on (default: ORCH_API_HOST or 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535),
              default=lambda: os.environ.get("ORCH_API_PORT", str(DEFAULT_PORT)),
              help=f"Port (default: ORCH_API_PORT or {DEFAULT_PORT}).")
@click.pass_context
def api(ctx: click.Context, host: str, port: int) -> None:
    """Serve the HTTP API and the web console (/console/) until SIGINT or SIGTERM.

    Needs API keys: the file ORCH_API_KEYS names (make one with
    `orchestrator api keys new NAME --role operator --file FILE`). docs/api.md
    describes the routes.
    """
    if ctx.invoked_subcommand is not None:
        return
    _serve(host, port)


def _serve(host: str, port: int) -> None:
    import structlog
    import uvicorn

    from ..cli.pg import projection_schema
    from ..logging import bind_role, configure_logging
    from ..runtime.kafka import KafkaUnavailable, check_kafka
    from ..runtime.secrets import Sealer, SecretKeyError
    from .app import create_app
    from .auth import KeyFileError, load_key_ring

    try:
        keys = load_key_ring()
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    settings = get_settings()
    try:  # sealing needs the key: say so now, not on the first start
        Sealer.from_settings(settings)
    except SecretKeyError as exc:
        raise CliError(str(exc)) from None
    templates = os.environ.get("ORCH_TEMPLATES") or None
    if templates is not None and not Path(templates).is_dir():
        raise CliError(f"ORCH_TEMPLATES {templates}: not a directory of step templates")
    try:
        configure_logging(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    bind_role("api")
    log = structlog.get_logger("orchestrator.api")
    try:
        check_kafka(settings, timeout=5)
    except KafkaUnavailable as exc:  # serve anyway: writes answer 503 until Kafka is back
        log.warning("kafka_unavailable", error=str(exc))
    app = create_app(settings, keys, schema=projection_schema(), templates_dir=templates)
    log.info("api_starting", host=host, port=port, keys=len(keys))
    uvicorn.run(app, host=host, port=port, log_config=None, server_header=False)


@api.group("keys")
def keys() -> None:
    """API keys (only their SHA-256 hashes are stored)."""


@keys.command("new")
@click.argument("name")
@click.option("--role", type=click.Choice(["reader", "operator", "webhook"]), required=True,
              help="reader: GET routes; operator: everything; webhook: POST /api/v1/webhooks/... only.")
@click.option("--file", "path", default=None, metavar="FILE", help="The keys file (default: $ORCH_API_KEYS).")
def new(name: str, role: str, path: str | None) -> None:
    """Make a random key for NAME, append its hash to the keys file and print the key (only this once)."""
    from .auth import KEYS_ENV, KeyFileError, new_key

    path = path or os.environ.get(KEYS_ENV) or None
    if path is None:
        raise click.UsageError(f"give --file FILE (or set {KEYS_ENV})")
    try:
        key = new_key(path, name, role)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    click.echo(key)
    click.echo(f"key {name!r} ({role}) added to {path}; it is shown only now. "
               f"Serve with {KEYS_ENV}={path} orchestrator api", err=True)
