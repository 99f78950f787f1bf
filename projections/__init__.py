"""PostgreSQL projections of the orchestrator's Kafka topics.

    from projections import migrate, snapshot, Projector, run_projector
    from projections.rebuild import rebuild

    migrate(conn, schema=None)                        # versioned SQL in migrations/
    Projector(settings, schema=None).run(stop_event)  # wf.definitions + wf.events -> tables
    run_projector(settings, stop_event, schema=None)  # the `orchestrator run projector` loop
    rebuild(settings, progress=None, schema=None)     # truncate, re-read from offset 0
    snapshot(conn, schema=None) -> dict               # canonical dump: live == rebuilt

Tables: workflow_definitions, workflow_executions, step_executions,
execution_events, projection_offsets (and schema_migrations).
"""

from __future__ import annotations

from .db import connect
from .dump import snapshot
from .migrate import migrate
from .projector import Projector, run_projector

__all__ = ["Projector", "connect", "migrate", "run_projector", "snapshot"]
