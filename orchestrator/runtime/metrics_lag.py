"""Consumer lag per assigned partition, from librdkafka's statistics.

librdkafka's own thread gathers statistics every `LAG_INTERVAL_MS` and the
role's next poll hands them to `ConsumerLag.on_stats` (a JSON parse of a few
kB): nothing waits for a broker, and the roles' loops are not slowed. A
consumer reports its lag only when built with `metrics.consumer_lag_config`
while this process serves metrics.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from prometheus_client import Gauge

__all__ = ["CONSUMER_LAG", "LAG_INTERVAL_MS", "ConsumerLag", "partition_lags"]

log = structlog.get_logger("metrics")

LAG_INTERVAL_MS = 5000
CONSUMER_LAG = Gauge("orchestrator_consumer_lag_messages",
                     "Last stable offset minus the consumer's position, per assigned partition",
                     ["role", "topic", "partition"])


class ConsumerLag:
    """Consumer lag per assigned partition from librdkafka's statistics (`stats_cb`).

    Lag = last stable offset (what a read_committed consumer can reach) minus the
    position of the application (`app_offset`; `next_offset`, the fetch position,
    before the first message of a partition was handed out). Statistics are
    gathered by librdkafka's thread and handed over by the role's own poll, so
    nothing here waits for a broker. Partitions no longer assigned lose their series.
    """

    def __init__(self, role: str) -> None:
        self.role = role
        self._series: set[tuple[str, str]] = set()

    def config(self) -> dict[str, Any]:
        return {"statistics.interval.ms": LAG_INTERVAL_MS, "stats_cb": self.on_stats}

    def on_stats(self, text: str) -> None:
        try:  # an exception here would surface from the role's poll()
            self.update(partition_lags(json.loads(text)))
        except Exception as exc:
            log.warning("consumer_stats_unreadable", role=self.role, error=str(exc))

    def update(self, lags: dict[tuple[str, str], int]) -> None:
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self.role, topic, partition).set(lag)
        for gone in self._series - lags.keys():
            _remove(CONSUMER_LAG, self.role, *gone)
        self._series = set(lags)


def partition_lags(stats: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(topic, partition) -> lag of the partitions the application consumes."""
    lags: dict[tuple[str, str], int] = {}
    for topic, body in (stats.get("topics") or {}).items():
        for pid, part in (body.get("partitions") or {}).items():
            if pid == "-1" or not part.get("desired"):
                continue
            end = part.get("ls_offset", -1)
            end = end if end >= 0 else part.get("hi_offset", -1)
            position = part.get("app_offset", -1)
            position = position if position >= 0 else part.get("next_offset", -1)
            if end >= 0 and position >= 0:
                lags[(topic, pid)] = max(0, end - position)
    return lags


def _remove(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass
