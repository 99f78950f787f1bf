"""Sending records to Kafka: the shape every front end uses.

A `Send` takes (topic, key, message) records, publishes them all and returns
where each landed, in order, or raises. The CLI's sender makes a producer per
command (`orchestrator.cli.kafka_io.publish`); a server keeps one
`KafkaSender` for its whole life: one idempotent producer, a thread serving
its delivery reports, and callers (any thread) waiting for their own records.
Keys are execution ids (or event ids, `name@version`) and the producer uses
the murmur2 partitioner, so a command lands on the partition whose decider
owns the execution.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from ..codec import Codec
from ..config import Settings

__all__ = ["KafkaSender", "Record", "Send", "SendError", "Sent"]

Record = tuple[str, str, Any]  # (topic, key, message dataclass)


@dataclass(frozen=True)
class Sent:
    """Where a record landed."""

    topic: str
    key: str
    partition: int
    offset: int

    def as_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "key": self.key, "partition": self.partition, "offset": self.offset}


# Returns objects with topic, key, partition, offset and as_json() (Sent, or the CLI's Published).
Send = Callable[[list[Record]], Sequence[Any]]


class SendError(RuntimeError):
    """Kafka refused a record or did not confirm it in time (it may or may not arrive)."""


class KafkaSender:
    """One long-lived producer for a server: thread-safe, each call waits for its own records."""

    def __init__(self, settings: Settings, *, role: str = "api", delivery_timeout_s: float = 15.0,
                 codec: Codec | None = None) -> None:
        from confluent_kafka import Producer

        from ..runtime.kafka import producer_config

        self.delivery_timeout_s = delivery_timeout_s
        self.codec = codec or Codec.default()
        self.producer = Producer(producer_config(settings, role=role, **{
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "socket.connection.setup.timeout.ms": 5000,
            "log_level": 0,  # failures reach the caller as SendError; no librdkafka lines on stderr
        }))
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._serve_reports, name="kafka-sender", daemon=True)
        self._poller.start()

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    def __call__(self, records: list[Record]) -> list[Sent]:
        futures: list[Future[Sent]] = []
        for topic, key, message in records:
            future: Future[Sent] = Future()
            try:
                self.producer.produce(topic, self.codec.encode(message), key.encode("utf-8"),
                                      on_delivery=self._report(future, topic, key))
            except BufferError:
                raise SendError("Kafka producer queue is full; try again shortly") from None
            futures.append(future)
        done, pending = wait(futures, timeout=self.delivery_timeout_s + 5)
        if pending:
            raise SendError(f"Kafka did not confirm {len(pending)} record(s) within "
                            f"{self.delivery_timeout_s:g}s; they may or may not arrive")
        return [f.result() for f in futures]

    @staticmethod
    def _report(future: Future[Sent], topic: str, key: str) -> Callable[[Any, Any], None]:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                future.set_exception(SendError(f"cannot publish {key!r} to {topic}: {err.str()}"))
            else:
                future.set_result(Sent(topic, key, msg.partition(), msg.offset()))
        return delivered

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._poller.join(timeout)
        self.producer.flush(timeout)
