"""Client configs (no broker needed)."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer

from orchestrator.config import Settings, Topics
from orchestrator.runtime.kafka import (
    consumer_config,
    copartitioned_topics,
    creation_tuning,
    producer_config,
    reader_config,
    topic_configs,
)

S = Settings(kafka_bootstrap="127.0.0.1:1", topics=Topics("x."), instance="7")
QUIET = {"log_level": 0}


def test_producer_config():
    p = producer_config(S, transactional_id="orchestrator-decider-7", **{"linger.ms": 2})
    assert p["partitioner"] == "murmur2_random" and p["enable.idempotence"] is True and p["acks"] == "all"
    assert p["transactional.id"] == "orchestrator-decider-7" and p["client.id"] == "orchestrator-decider-7"
    assert p["linger.ms"] == 2 and p["bootstrap.servers"] == "127.0.0.1:1"
    assert producer_config(S, role="executor")["client.id"] == "orchestrator-executor-7"
    assert "transactional.id" not in producer_config(S)
    Producer({**p, **QUIET}).flush(0)  # librdkafka accepts every property


def test_consumer_config():
    c = consumer_config(S, "orchestrator-decider")
    assert c["group.id"] == "orchestrator-decider" and c["client.id"] == "orchestrator-decider-7"
    assert c["isolation.level"] == "read_committed" and c["enable.auto.commit"] is False
    assert c["auto.offset.reset"] == "earliest" and c["partition.assignment.strategy"] == "range"
    assert c["fetch.wait.max.ms"] <= 10
    assert consumer_config(S, "g", role="projector")["client.id"] == "orchestrator-projector-7"
    assert consumer_config(S, "g", **{"partition.assignment.strategy": "cooperative-sticky"})[
        "partition.assignment.strategy"] == "cooperative-sticky"
    r = reader_config(S)
    assert r["enable.partition.eof"] is True and r["isolation.level"] == "read_committed"
    Consumer({**c, **QUIET}).close()
    Consumer({**r, **QUIET}).close()


def test_topic_layout():
    configs = topic_configs(S)
    assert set(configs) == {"x.commands", "x.results", "x.tasks", "x.events", "x.definitions",
                            "x.external-events", "x.waits", "x.schedules", "x.dlq"}
    assert configs["x.events"] == {"retention.ms": "-1", "retention.bytes": "-1"}
    assert configs["x.definitions"] == {"cleanup.policy": "compact"}
    assert copartitioned_topics(S) == ("x.commands", "x.results", "x.tasks", "x.events")
    assert configs["x.waits"] == {"cleanup.policy": "compact"}
    assert configs["x.schedules"] == {"cleanup.policy": "compact"}
    assert creation_tuning(S)["x.waits"]["delete.retention.ms"] == "3600000"  # set on creation only
