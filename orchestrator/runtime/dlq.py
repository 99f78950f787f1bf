"""Dead letters: messages no role can handle go to the dlq topic, bytes untouched.

Dead letters keep the original key, value and headers; the reason travels in
`dlq.*` headers so an operator can inspect, fix and re-publish them. Each
delivered one counts in `orchestrator_dlq_messages_total{role, topic, reason}`,
`reason` being a kind (undecodable, invalid, misaddressed, failed,
trigger_error, unencodable, other), never the free text.
"""

from __future__ import annotations

from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message

from ..config import Settings
from .metrics import DLQ_MESSAGES

__all__ = ["DeadLetters"]

log = structlog.get_logger("dlq")

_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


class DeadLetters:
    """Publish messages no role can handle to the dlq topic, bytes untouched.

    Headers: the original ones (minus any old `dlq.*`) plus `dlq.reason`,
    `dlq.topic`, `dlq.partition`, `dlq.offset`, `dlq.role`. With a transactional
    producer the dead letter is part of the caller's open transaction; with a
    plain one, pass `wait=True` (or flush) before committing the input offset.
    """

    MAX_REASON = 8192

    def __init__(self, producer: Any, settings: Settings | str):
        self.producer = producer
        self.topic = settings if isinstance(settings, str) else settings.topics.dlq
        self.failures = 0

    def send(self, msg: Message, reason: str, role: str, *, wait: bool = False, kind: str = "other") -> None:
        self.send_raw(msg.key(), msg.value(), reason, role, topic=msg.topic(), partition=msg.partition(),
                      offset=msg.offset(), headers=msg.headers(), wait=wait, kind=kind)

    def send_raw(self, key: bytes | str | None, value: bytes | None, reason: str, role: str, *,
                 topic: str | None = None, partition: int | None = None, offset: int | None = None,
                 headers: list[tuple[str, bytes]] | None = None, wait: bool = False, kind: str = "other") -> None:
        kept = [(k, v) for k, v in headers or () if not k.startswith("dlq.")]
        kept += [
            ("dlq.reason", reason[: self.MAX_REASON].encode("utf-8", "replace")),
            ("dlq.topic", (topic or "").encode("utf-8")),
            ("dlq.partition", b"" if partition is None else str(partition).encode()),
            ("dlq.offset", b"" if offset is None else str(offset).encode()),
            ("dlq.role", role.encode("utf-8")),
        ]
        outcome: list[KafkaError | None] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            outcome.append(err)
            if err is None:
                DLQ_MESSAGES.labels(role, topic or "", kind).inc()
            elif err.code() not in _PURGED:  # purged: its transaction was aborted
                self.failures += 1
                log.error("dead_letter_not_delivered", topic=topic, offset=offset, error=str(err))
            else:
                log.info("dead_letter_aborted", topic=topic, offset=offset)

        kwargs = {"key": key, "value": value, "headers": kept, "on_delivery": delivered}
        try:
            self.producer.produce(self.topic, **kwargs)
        except BufferError:
            self.producer.poll(1.0)
            self.producer.produce(self.topic, **kwargs)
        log.warning("dead_lettered", topic=topic, partition=partition, offset=offset, role=role, reason=reason)
        if wait:
            self.producer.flush(30.0)
            if not outcome or outcome[0] is not None:
                raise KafkaException(outcome[0] if outcome else KafkaError(KafkaError._MSG_TIMED_OUT))
        else:
            self.producer.poll(0)

    @staticmethod
    def headers_of(msg: Message) -> dict[str, str]:
        """The `dlq.*` headers of a dead letter, decoded."""
        return {k: (v or b"").decode("utf-8", "replace") for k, v in msg.headers() or () if k.startswith("dlq.")}
