"""`orchestrator run [decider|executor|projector|correlator|triggers|all]`: the long-running roles.

A role runs until SIGINT or SIGTERM sets its stop event; it then finishes the
batch in hand and returns (a second signal stops at once). `all` runs every
role in its own OS process (multiprocessing, spawn), so they use every core:
the parent only supervises. A signal to the parent is passed to the children
as SIGTERM (children ignore the terminal's SIGINT so one Ctrl-C is one
graceful stop); a child that dies makes the parent stop the others and exit 1.
Topics are ensured and the projection migrated once, before any role starts.

Metrics: with `--metrics-port P` (or ORCH_METRICS_PORT) a role serves
Prometheus metrics at http://ORCH_METRICS_HOST:P/metrics; under `all` each role
process serves its own, at P + the role's index in ROLES (decider P, executor
P+1, projector P+2, correlator P+3, triggers P+4). See docs/metrics.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import signal
import sys
import threading
import time
from multiprocessing.connection import wait as wait_for_processes
from typing import Any, Callable

import click
import structlog

from ..config import Settings, load_settings
from .common import CliError, get_settings

__all__ = ["run", "ROLES", "run_role"]

# role -> (module, entry point): each entry point is `f(settings, stop_event, **options)`.
ROLES: dict[str, tuple[str, str]] = {
    "decider": ("orchestrator.runtime.decider", "run_decider"),
    "executor": ("orchestrator.runtime.executor", "run_executor"),
    "projector": ("projections.projector", "run_projector"),
    "correlator": ("orchestrator.runtime.correlator", "run_correlator"),
    "triggers": ("orchestrator.runtime.triggers", "run_triggers"),
}
STOP_GRACE_S = 30.0  # how long `all` waits for its children after asking them to stop

log = structlog.get_logger("orchestrator.run")


def _entry(role: str) -> Callable[..., None]:
    module, name = ROLES[role]
    return getattr(importlib.import_module(module), name)


def _options(role: str) -> dict[str, Any]:
    if role == "projector":
        from .pg import projection_schema

        return {"schema": projection_schema()}
    return {}


def _configure(settings: Settings, role: str) -> None:
    from ..logging import bind_role, configure_logging

    try:
        configure_logging(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    bind_role(role)


def _prepare(settings: Settings, roles: list[str]) -> None:
    """Create the topics (and migrate the projection) before any role needs them."""
    from .kafka_io import ensure

    outcome = ensure(settings)
    log.info("topics_ready", created=sorted(t for t, o in outcome.items() if o == "created"))
    if "projector" in roles:
        from projections.migrate import migrate

        from .pg import connect, projection_schema

        with connect(settings, dict_rows=False) as conn:
            applied = migrate(conn, projection_schema())
        log.info("projection_migrated", applied=[f"{m.version:04d}_{m.name}" for m in applied])


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop now
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def metrics_port(base: int, role: str) -> int:
    """The port of `role` under `run all` (0 stays 0: no metrics)."""
    return base + list(ROLES).index(role) if base else 0


def _serve_metrics(role: str, settings: Settings) -> None:
    from ..runtime.metrics import serve

    try:
        serve(role, settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        raise CliError(f"cannot serve the {role}'s metrics on {settings.metrics_host}:{settings.metrics_port}: "
                       f"{exc.strerror or exc} (--metrics-port / ORCH_METRICS_PORT)") from None


def run_role(role: str, settings: Settings, stop: threading.Event) -> int:
    """Run one role in this process until `stop` is set; the exit code."""
    try:
        _entry(role)(settings, stop, **_options(role))
    except KeyboardInterrupt:
        log.warning("role_interrupted", role=role)
        return 130
    except Exception:
        log.exception("role_failed", role=role)
        return 1
    log.info("role_stopped", role=role)
    return 0


def _child(role: str, base_port: int) -> None:
    """A spawned process of `run all`: the parent decides when to stop (SIGTERM)."""
    stop = threading.Event()
    settings = dataclasses.replace(load_settings(), metrics_port=metrics_port(base_port, role))
    _configure(settings, role)
    try:
        _serve_metrics(role, settings)
    except CliError as exc:
        log.error("role_failed", role=role, error=str(exc))
        sys.exit(1)
    _stop_on_signals(stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the parent's to handle
    log.info("role_starting", role=role)
    sys.exit(run_role(role, settings, stop))


def _supervise(roles: list[str], base_port: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()
    _stop_on_signals(stop)
    procs = {role: ctx.Process(target=_child, args=(role, base_port), name=f"orchestrator-{role}") for role in roles}
    for role, proc in procs.items():
        proc.start()
        log.info("role_spawned", role=role, pid=proc.pid)
    failed: list[str] = []
    while not stop.is_set():
        wait_for_processes([p.sentinel for p in procs.values()], timeout=0.5)
        dead = [role for role, p in procs.items() if not p.is_alive()]
        if dead and not stop.is_set():
            for role in dead:
                log.error("role_died", role=role, exitcode=procs[role].exitcode)
            failed += dead
            break
    alive = [p for p in procs.values() if p.is_alive()]
    for p in alive:
        p.terminate()  # SIGTERM: a graceful stop in the child
    deadline = time.monotonic() + STOP_GRACE_S
    try:
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:  # a second signal: do not wait any longer
        pass
    for role, p in procs.items():
        if p.is_alive():
            log.warning("role_killed", role=role, pid=p.pid)
            p.kill()
            p.join(5)
    codes = {role: p.exitcode for role, p in procs.items()}
    unclean = [role for role, code in codes.items() if code not in (0, None) and role not in failed]
    log.info("all_stopped", exitcodes=codes)
    return 1 if failed or unclean else 0


@click.command()
@click.argument("role", type=click.Choice([*ROLES, "all"]), default="all")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on this port (`all`: this + the role's index); "
                   "0 = off. Default: ORCH_METRICS_PORT, else off.")
def run(role: str, metrics_port: int | None) -> None:
    """Run a role (or all of them, one process each) until SIGINT/SIGTERM."""
    settings = get_settings()
    if metrics_port is not None:
        settings = dataclasses.replace(settings, metrics_port=metrics_port)
    roles = list(ROLES) if role == "all" else [role]
    _configure(settings, "supervisor" if role == "all" else role)
    if role != "all":
        _serve_metrics(role, settings)  # first: a port in use fails at once
    _prepare(settings, roles)
    if role == "all":
        code = _supervise(roles, settings.metrics_port)
    else:
        stop = threading.Event()
        _stop_on_signals(stop)
        log.info("role_starting", role=role)
        code = run_role(role, settings, stop)
    if code:
        raise SystemExit(code)
