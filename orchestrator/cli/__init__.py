"""The `orchestrator` command line (also `python -m orchestrator`).

    definitions validate|apply|list     workflow definitions (validate is offline)
    definitions new|templates           a starter definition from a built-in template
    start NAME [--wait]                 start an execution; follow it on Kafka
    status ID [--follow] / list         the PostgreSQL projection (--follow: a line per change)
    history ID / replay ID              the truth on Kafka; replay audits the projection
    cancel ID [--step S] / signal ID NAME  commands to the decider
    retry|pause|resume ID / skip ID STEP   operators' actions (recorded with who asked)
    bulk cancel|retry|pause|resume      one action over every execution a filter matches (--dry-run)
    events publish TYPE --data JSON     an external business event
    triggers list                       event and schedule triggers of the registered workflows
    run [decider|executor|projector|correlator|triggers|all]
    api / api keys new NAME             the HTTP API and web console; API keys
    projections rebuild|migrate / topics create

Configuration comes from the environment (ORCH_*, see `orchestrator.config`).
Every command that prints data has `--json`; errors a user can cause print
one line (`error: ...`) and exit non-zero, never a traceback.
"""

from __future__ import annotations

from typing import Any

import click

from ..api.cli import api
from .admin import projections, topics
from .audit import history, replay
from .common import CliError
from .definitions import definitions
from .executions import cancel, events, signal, start
from .bulk import bulk
from .operate import pause, resume, retry, skip
from .queries import list_executions, status
from .run import run
from .triggers import triggers

__all__ = ["cli", "main"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def translate_errors(exc: Exception) -> CliError | None:
    """A one-line CliError for the failures a user can cause or meet; None for bugs."""
    import psycopg
    from confluent_kafka import KafkaError, KafkaException

    from ..runtime.kafka import KafkaUnavailable, TopicMismatchError
    from ..runtime.secrets import SecretKeyError, UnsealError

    if isinstance(exc, (KafkaUnavailable, TopicMismatchError, SecretKeyError, UnsealError)):
        return CliError(str(exc))
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        return CliError(f"Kafka: {err.str() if isinstance(err, KafkaError) else _first_line(exc)}")
    if isinstance(exc, psycopg.OperationalError):
        return CliError(f"PostgreSQL: {_first_line(exc)}")
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return CliError(f"PostgreSQL: {_first_line(exc)} (run `orchestrator projections migrate`)")
    return None


class OrchestratorGroup(click.Group):
    """The root group: turns known failures into one-line errors."""

    def invoke(self, ctx: click.Context) -> Any:
        import structlog

        saved = structlog.get_config()  # a command's logging set-up ends with it (in-process callers, tests)
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            translated = translate_errors(exc)
            if translated is None:
                raise
            raise translated from None
        finally:
            structlog.configure(**saved)


@click.group(cls=OrchestratorGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                      "max_content_width": 100})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """An event-sourced workflow orchestrator on Apache Kafka.

    Configuration: ORCH_KAFKA_BOOTSTRAP, ORCH_DATABASE_URL, ORCH_TOPIC_PREFIX,
    ORCH_PARTITIONS, ORCH_SERVICES, ORCH_SECRET_KEY(_FILE), ORCH_LOG_LEVEL,
    ORCH_LOG_FORMAT, ORCH_DATABASE_SCHEMA.
    """
    ctx.ensure_object(dict)
    _quiet_logging()


def _quiet_logging() -> None:
    """Library log lines (structlog's default goes to stdout) must not mix with a
    command's output: warnings and errors only, on stderr. `run` reconfigures."""
    import logging
    import sys

    import structlog

    from ..logging import redact_secrets

    structlog.configure(
        processors=[structlog.processors.add_log_level, redact_secrets,
                    structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


for command in (definitions, start, status, list_executions, history, replay, cancel, signal, events, run,
                projections, topics, triggers, retry, pause, resume, skip, bulk):
    cli.add_command(command)
cli.add_command(api)  # the HTTP API: orchestrator/api/cli.py


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="orchestrator")
