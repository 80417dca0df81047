"""The worker's Kafka reads and writes that need more than one client call: keyed outputs sent as one record
batch per partition, and a partition read to its high watermark."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2


async def high_watermarks(consumer: AIOKafkaConsumer, tps: list[TopicPartition], take: Callable[[Any], None],
                          timeout_s: float = 60) -> dict[TopicPartition, int]:
    """The high watermarks of assigned partitions, from one round of fetches over all of them at once (each
    empty partition costs the broker's fetch wait once, not once per partition); records fetched meanwhile
    go to `take`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        highs = {tp: consumer.highwater(tp) for tp in tps}
        if all(h is not None for h in highs.values()):
            return {tp: int(h) for tp, h in highs.items() if h is not None}
        for messages in (await consumer.getmany(*tps, timeout_ms=500, max_records=50_000)).values():
            for m in messages:
                take(m)
    raise TimeoutError(f"no high watermark for {sorted(tp.partition for tp in tps)} in {timeout_s:.0f} s")


async def read_to_high_watermark(consumer: AIOKafkaConsumer, tp: TopicPartition, take: Callable[[Any], None],
                                 timeout_s: float = 300) -> bool:
    """Hands every record of an assigned partition from its position up to its high watermark to `take`;
    returns whether there were any. The high watermark comes from the fetch responses (ListOffsets
    under-reports on the embedded broker, STACK.md)."""
    deadline = time.monotonic() + timeout_s
    seen = False
    while time.monotonic() < deadline:
        fetched = await consumer.getmany(tp, timeout_ms=500, max_records=50_000)
        for m in fetched.get(tp, []):
            seen = True
            take(m)
        high = consumer.highwater(tp)
        if high is not None and await consumer.position(tp) >= high:
            return seen
    raise TimeoutError(f"{tp.topic}[{tp.partition}] not read to its end in {timeout_s:.0f} s")


async def send_keyed(producer: AIOKafkaProducer, topic: str, messages: list[tuple[bytes, bytes]],
                      headers: list[tuple[str, bytes]] | None = None) -> list[asyncio.Future[Any]]:
    """Queues keyed messages as one record batch per partition; returns the batches' futures.

    Partitions are chosen as Kafka's default partitioner does (murmur2 of the key), so keys land where any
    client would put them. A batch instead of a send per message pays aiokafka's per-message future,
    metadata lookup and completion callback once per batch (docs/design.md, "Sending outputs").
    """
    partitions = sorted(await producer.partitions_for(topic))
    n = len(partitions)
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    chosen: dict[bytes, int] = {}  # samples of one user share a key: hash it once
    for key, value in messages:
        partition = chosen.get(key)
        if partition is None:
            partition = chosen[key] = partitions[(murmur2(key) & 0x7FFFFFFF) % n]
        by_partition.setdefault(partition, []).append((key, value))
    futures = []
    for partition, keyed in by_partition.items():
        futures.extend(future for future, _ in await send_to(producer, topic, partition, keyed, headers))
    return futures

async def send_to(producer: AIOKafkaProducer, topic: str, partition: int, messages: list[tuple[bytes, bytes]],
                   headers: list[tuple[str, bytes]] | None = None) -> list[tuple[asyncio.Future[Any], int]]:
    """Queues messages, in order, as record batches to one partition: (future, records) per batch."""
    out: list[tuple[asyncio.Future[Any], int]] = []
    batch, count = producer.create_batch(), 0
    for key, value in messages:
        if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:  # full: send it
            out.append((await producer.send_batch(batch, topic, partition=partition), count))
            batch, count = producer.create_batch(), 0
            batch.append(key=key, value=value, timestamp=None, headers=headers or [])  # the first always fits
        count += 1
    if count:
        out.append((await producer.send_batch(batch, topic, partition=partition), count))
    return out
