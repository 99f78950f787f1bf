"""Structured logging for the long-running roles (`orchestrator run ...`).

`configure_logging(settings)` sets up structlog once per process:
`settings.log_format` picks a console renderer (colours on a terminal) or one
JSON object per line; `settings.log_level` filters. Lines go to stderr, so a
command's data on stdout stays clean. Standard-library loggers (httpx,
confluent-kafka's client logs when a logger is passed) render the same way.

Roles pass `execution_id=...` with each event, or bind it for a block with
`structlog.contextvars.bound_contextvars(execution_id=...)`; `bind_role`
stamps every line of a process with its role. Values under keys named like a
secret (password, secret, token, ...) and sealed values (`{"$secret": ...}`)
are replaced by "***" before rendering, whatever a caller logs.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, MutableMapping

import structlog

from .core.sensitive import is_sensitive_name

__all__ = ["configure_logging", "bind_role", "redact_secrets", "LEVELS"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Keys whose names read like a secret but whose values never are one.
_HARMLESS_KEYS = frozenset({"event", "secret_key_file", "token_count"})
_MAX_DEPTH = 20


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        if set(value) == {"$secret"}:
            return "***"
        return {k: "***" if _is_sensitive_key(k) else _redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(v, depth + 1) for v in value)
    return value


def _is_sensitive_key(key: Any) -> bool:
    if not isinstance(key, str) or key in _HARMLESS_KEYS:
        return False
    return is_sensitive_name(key) or key.lower() in ("authorization", "proxy-authorization", "cookie")


def redact_secrets(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no secret reaches a log line."""
    for key, value in list(event_dict.items()):
        if _is_sensitive_key(key) and value is not None:
            event_dict[key] = "***"
        elif isinstance(value, (dict, list, tuple)):
            event_dict[key] = _redact(value)
    return event_dict


def _level(name: str) -> int:
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"ORCH_LOG_LEVEL: unknown level {name!r}; one of {', '.join(sorted(LEVELS))}") from None


def configure_logging(settings: Any, *, stream: Any = None) -> None:
    """Configure structlog and the standard library's logging for this process."""
    level = _level(getattr(settings, "log_level", "info"))
    fmt = getattr(settings, "log_format", "console").strip().lower()
    if fmt not in ("console", "json"):
        raise ValueError(f"ORCH_LOG_FORMAT: unknown format {fmt!r}; one of console, json")
    stream = stream or sys.stderr

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_static,
        redact_secrets,
    ]
    if fmt == "json":
        renderer: Any = structlog.processors.JSONRenderer(default=str, sort_keys=False)
        # Never locals in a traceback: a frame may hold an unsealed input.
        tail: list[Any] = [structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))]
    else:
        colors = hasattr(stream, "isatty") and stream.isatty()
        formatter = (structlog.dev.RichTracebackFormatter(show_locals=False) if colors
                     else structlog.dev.plain_traceback)
        renderer = structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=formatter)
        tail = []

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries: their INFO lines are per request.
    for name in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


_STATIC: dict[str, Any] = {}


def _add_static(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in _STATIC.items():
        event_dict.setdefault(key, value)
    return event_dict


def bind_role(role: str, **extra: Any) -> None:
    """Every later line of this process, from any thread, carries `role` (and `extra`)."""
    _STATIC.update(role=role, **extra)
