"""How far each arm's online trainer is behind the stream, read from Kafka during a replay.

A model arm's *training lag* is the number of samples on the samples topic that its trainer has not yet
learned: the topic's end offsets minus the offsets the trainer committed (it commits after each
checkpoint, every `checkpoint_every_s`, consumer group ``trainer-<model>``). Two arms whose trainers learn
at different speeds are not comparing models only: the replay report shows each arm's lag, and
`--pace-to-trainers N` holds the replay while any arm is more than N samples behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from streamrank import kafka_security

log = logging.getLogger(__name__)


class TrainerLag:
    """Samples behind the stream per arm, for the arms served by a named model (`arm -> model`)."""

    def __init__(self, settings: Any, arm_models: Mapping[str, str], timeout_s: float = 10.0) -> None:
        from confluent_kafka import Consumer

        self.topic = settings.topic("samples")
        self.timeout_s = timeout_s
        self.arm_models = dict(arm_models)
        self._consumers: dict[str, Any] = {}
        for model in sorted(set(self.arm_models.values())):
            self._consumers[model] = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                                               **kafka_security.librdkafka(settings),
                                               "group.id": f"trainer-{model}", "enable.auto.commit": False,
                                               "logger": log})
        self._partitions: list[int] = []

    def _tps(self, consumer: Any) -> list[Any]:
        from confluent_kafka import TopicPartition

        if not self._partitions:
            meta = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
            if meta is None or meta.error is not None:
                raise RuntimeError(f"topic {self.topic} does not exist")
            self._partitions = sorted(meta.partitions)
        return [TopicPartition(self.topic, p) for p in self._partitions]

    def lags(self) -> dict[str, int | None]:
        """Arm -> samples its trainer has not learned (None when the offsets cannot be read now)."""
        per_model: dict[str, int | None] = {}
        for model, consumer in self._consumers.items():
            try:
                tps = self._tps(consumer)
                ends = [consumer.get_watermark_offsets(tp, timeout=self.timeout_s)[1] for tp in tps]
                done = consumer.committed(tps, timeout=self.timeout_s)
                per_model[model] = int(sum(max(end - max(tp.offset, 0), 0)
                                           for end, tp in zip(ends, done, strict=True)))
            except Exception as exc:  # a probe must never stop the replay
                log.warning("training lag of %s unreadable: %s", model, exc)
                per_model[model] = None
        return {arm: per_model[model] for arm, model in self.arm_models.items()}

    def close(self) -> None:
        """Closes the probe's consumers."""
        for consumer in self._consumers.values():
            consumer.close()


def hold_while_behind(probe: Callable[[], dict[str, int | None]], limit: int, poll_s: float = 1.0,
                      max_wait_s: float = 600.0, sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> tuple[dict[str, int | None], float]:
    """Waits until no arm is more than `limit` samples behind (or `max_wait_s` passed); returns the last
    lags and the seconds waited. Unreadable lags do not hold the replay."""
    start = clock()
    lags = probe()
    while any(v is not None and v > limit for v in lags.values()) and clock() - start < max_wait_s:
        sleep(poll_s)
        lags = probe()
    return lags, clock() - start
