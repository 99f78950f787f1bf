"""What every command shares: settings, user-facing errors, JSON and time formats.

Errors a user can cause end as one line on stderr and a non-zero exit
(`CliError`); the root group turns Kafka, PostgreSQL and key errors into such
lines (`translate_errors`), so no traceback reaches the terminal.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..config import Settings, load_settings

__all__ = [
    "CliError",
    "EXIT_FAILED",
    "EXIT_TIMEOUT",
    "console",
    "duration_text",
    "echo_json",
    "epoch_ms",
    "err_console",
    "get_settings",
    "iso",
    "json_ready",
    "parse_json_value",
    "short",
    "styled_status",
    "warn",
]

EXIT_FAILED = 1  # the thing asked for went wrong (or an execution failed/was cancelled)
EXIT_TIMEOUT = 2  # `start --wait --timeout`: still running when the time was up


class CliError(click.ClickException):
    """A one-line message for the user; `exit_code` defaults to 1."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def console() -> Console:
    """Rich output on stdout (plain text when stdout is not a terminal: no colours,
    lines as wide as their content rather than cut at 80 columns)."""
    out = Console(highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out = Console(highlight=False, soft_wrap=True, width=max(out.width, 200))
    return out


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def get_settings() -> Settings:
    """The settings of this invocation, read from the environment once."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {}
    if "settings" not in root.obj:
        try:
            root.obj["settings"] = load_settings()
        except ValueError as exc:  # e.g. ORCH_PARTITIONS=four
            raise CliError(f"invalid configuration in the environment: {exc}") from None
    return root.obj["settings"]


# -- time and JSON -------------------------------------------------------------


def iso(value: int | float | datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a `Z`: epoch ms or an aware datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    else:
        moment = datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_ready(value: Any) -> Any:
    """Datetimes as ISO strings, tuples as lists, mappings as dicts, recursively."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_ready(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def echo_json(document: Any, *, lines: bool = False) -> None:
    """One JSON document on stdout (`lines`: compact, one per line, for streams)."""
    ready = json_ready(document)
    if lines:
        click.echo(json.dumps(ready, ensure_ascii=False, separators=(",", ":")))
    else:
        click.echo(json.dumps(ready, ensure_ascii=False, indent=2))


def parse_json_value(text: str | None, option: str) -> Any:
    """A JSON option: inline text, `@path` (a file's contents) or `@-` (stdin)."""
    if text is None:
        return None
    source = option
    if text.startswith("@"):
        name = text[1:]
        if name == "-":
            text, source = sys.stdin.read(), f"{option} (stdin)"
        else:
            path = Path(name).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise CliError(f"{option}: file not found: {name}") from None
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise CliError(f"{option}: cannot read {name}: {reason}") from None
            source = f"{option} file {name}"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def short(value: Any, limit: int = 60) -> str:
    """A compact one-line rendering of a value for tables."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(json_ready(value), ensure_ascii=False,
                                                           separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration_text(start_ms: int | float | None, end_ms: int | float | None) -> str:
    """`1.234s`, `2m03s`, `1h02m`: a human duration between two epoch-ms times."""
    if start_ms is None or end_ms is None:
        return ""
    seconds = max(0.0, (end_ms - start_ms) / 1000)
    if seconds < 60:
        return f"{seconds:.3f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def epoch_ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    return int(value.timestamp() * 1000)


STATUS_STYLES = {
    "pending": "dim",
    "new": "dim",
    "running": "cyan",
    "retrying": "yellow",
    "waiting": "magenta",
    "compensating": "yellow",
    "paused": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "red",
    "skipped": "dim",
}


def styled_status(status: str | None) -> str:
    if not status:
        return ""
    style = STATUS_STYLES.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status

