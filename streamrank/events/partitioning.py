"""Which partition a keyed record lands in: kafka-python's default partitioner, as the producer uses it."""

from __future__ import annotations

from kafka.partitioner.default import murmur2


def partition_of(key: str, partitions: int) -> int:
    """The partition of a record keyed by `key` (user id on the events topic) among `partitions`."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
