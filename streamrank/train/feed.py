"""The samples topic as micro-batches for the trainer, read with librdkafka (confluent-kafka).

librdkafka fetches ahead in its own threads and decodes record batches in C, so the next micro-batch is
already in memory when the current one has trained, and reading costs the trainer's Python thread almost
nothing. kafka-python, which the trainer used before, decodes every record in Python, under the GIL the
trainer needs: reading took a third of the trainer's time (docs/online-training.md, "Trainer speed").
Positions come from the trainer's checkpoint, never from Kafka's commits (partitions are assigned
explicitly: group subscription is not needed, and hangs against the embedded broker, STACK.md); commits are
informational, for monitoring tools.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from streamrank import kafka_security
from streamrank.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleRecord:
    """One samples-topic record: where it is, and its bytes."""

    partition: int
    offset: int
    value: bytes


class SampleFeed:
    """Micro-batches of samples-topic records (`train_batch_size`, or what came within `train_batch_within_s`)."""

    def __init__(self, settings: Settings, group_id: str, offsets: dict[int, int]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.settings = settings
        self.topic = settings.topic("samples")
        self._consumer = Consumer({
            "bootstrap.servers": settings.bootstrap_servers, "group.id": group_id,
            **kafka_security.librdkafka(settings),
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "fetch.max.bytes": 32 * 1024 * 1024, "queued.max.messages.kbytes": 64 * 1024,
            "logger": log,
        })
        meta = self._consumer.list_topics(self.topic, timeout=30)
        topic_meta = meta.topics.get(self.topic)
        if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
            self._consumer.close()
            raise RuntimeError(f"topic {self.topic} does not exist (start the worker, or ensure_topics)")
        self._partitions = sorted(topic_meta.partitions)
        self._consumer.assign([TopicPartition(self.topic, p, offsets.get(p, OFFSET_BEGINNING))
                               for p in self._partitions])

    def next_batch(self, timeout_s: float) -> list[SampleRecord]:
        """Up to train_batch_size records; waits at most `timeout_s` for them ([] when none came)."""
        size = self.settings.train_batch_size
        out: list[SampleRecord] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for msg in self._consumer.consume(num_messages=size - len(out), timeout=left):
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise RuntimeError(f"reading {self.topic} failed: {err}")
                    log.warning("reading %s: %s", self.topic, err)
                    continue
                out.append(SampleRecord(msg.partition(), msg.offset(), msg.value()))
        return out

    def commit(self, offsets: dict[int, int], asynchronous: bool = False) -> None:
        """Commit these next offsets (partition -> offset) to Kafka; informational only (the training lag
        a replay reads), so an asynchronous commit that fails is only logged by the client."""
        from confluent_kafka import KafkaException, TopicPartition

        if not offsets:
            return
        try:
            self._consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                                  asynchronous=asynchronous)
        except KafkaException as exc:
            log.warning("offset commit failed (%s); the checkpoint holds the positions", exc)

    def lag(self, offsets: dict[int, int]) -> int:
        """Samples on the topic beyond `offsets` (the next offsets to learn), from the high watermarks the client
        caches from its fetches (no broker request); partitions not fetched yet count as 0."""
        from confluent_kafka import TopicPartition

        behind = 0
        for partition in self._partitions:
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
            except Exception:
                continue
            if high is not None and high >= 0:
                behind += max(0, high - offsets.get(partition, 0))
        return behind

    def close(self) -> None:
        """Closes the consumer (no commit: the trainer committed after its last checkpoint)."""
        self._consumer.close()
