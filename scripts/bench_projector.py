#!/usr/bin/env python3
"""Projector throughput: write N events to a fresh topic prefix, time the projection.

    .venv/bin/python scripts/bench_projector.py [--executions 2000] [--batch-size 500]

Needs the local stack (scripts/stack-up). The events are the decider's real
output for completing executions (10 events each), written in Kafka
transactions of 500 like the decider's. Uses its own topic prefix and
PostgreSQL schema and removes both afterwards (unless --keep).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from orchestrator.codec import Codec  # noqa: E402
from orchestrator.config import Topics, load_settings  # noqa: E402
from orchestrator.runtime.kafka import admin_client, ensure_topics, producer_config, topic_configs  # noqa: E402
from projections import Projector  # noqa: E402
from projections.rebuild import rebuild  # noqa: E402
from tests.projection_histories import many_histories, pipeline_registered  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=2000, help="executions of 10 events each")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--no-rebuild", action="store_true", help="skip timing a rebuild")
    parser.add_argument("--keep", action="store_true", help="keep the topics and the schema")
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(load_settings(), topics=Topics(f"bench-{tag}."), instance=tag)
    schema = f"bench_{tag}"
    codec = Codec.default()
    ensure_topics(settings)
    try:
        t0 = time.perf_counter()
        histories = many_histories(args.executions, prefix=f"b{tag}")
        # Executions interleaved (as live traffic is), each one's events in order.
        encoded = [(h[i].execution_id.encode(), codec.encode(h[i]))
                   for i in range(max(map(len, histories))) for h in histories if i < len(h)]
        t1 = time.perf_counter()
        producer = Producer(producer_config(settings, transactional_id=f"bench-{tag}", **{"linger.ms": 5}))
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(settings.topics.definitions, key=b"pipeline@1", value=codec.encode(pipeline_registered()))
        producer.commit_transaction(30)
        for start in range(0, len(encoded), 500):
            producer.begin_transaction()
            for key, value in encoded[start:start + 500]:
                producer.produce(settings.topics.events, key=key, value=value)
            producer.commit_transaction(30)
        t2 = time.perf_counter()
        events = len(encoded)
        print(f"generated+encoded {events} events in {t1 - t0:.2f}s; produced in {t2 - t1:.2f}s "
              f"({events / (t2 - t1):,.0f}/s)")

        projector = Projector(settings, schema, batch_size=args.batch_size).open()
        try:
            joined = time.perf_counter()
            while not (projector.stream and projector.stream.expected):  # wait for the assignment
                projector.poll_once()
            start = time.perf_counter()
            projector.run_until_caught_up(timeout_s=600)
            elapsed = time.perf_counter() - start
        finally:
            projector.close()
        print(f"group join {start - joined:.2f}s; projected {projector.events_projected} events in "
              f"{elapsed:.2f}s: {projector.events_projected / elapsed:,.0f} events/s")
        with psycopg.connect(settings.database_url) as conn:
            counts = conn.execute(
                f"SELECT (SELECT count(*) FROM {schema}.execution_events),"
                f" (SELECT count(*) FROM {schema}.workflow_executions WHERE status = 'completed'),"
                f" (SELECT count(*) FROM {schema}.step_executions)").fetchone()
        print(f"rows: {counts[0]} events, {counts[1]} completed executions, {counts[2]} steps")
        assert counts[0] == events, "not every event was projected"

        if not args.no_rebuild:
            start = time.perf_counter()
            result = rebuild(settings, schema=schema, batch_size=max(args.batch_size, 1000))
            elapsed = time.perf_counter() - start
            print(f"rebuilt {result.events} events in {elapsed:.2f}s: {result.events / elapsed:,.0f} events/s")
    finally:
        if not args.keep:
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            for future in admin_client(settings).delete_topics(list(topic_configs(settings))).values():
                try:
                    future.result()
                except Exception:
                    pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
