"""The topics of the flow and their creation (tansu auto-creates topics with 1 partition otherwise)."""

from __future__ import annotations

import contextlib
import logging

from streamrank import kafka_security
from streamrank.config import Settings

log = logging.getLogger(__name__)

# Logical topic names -> whether the topic is compacted (latest value per key is what matters).
TOPICS: dict[str, bool] = {
    "events": False,
    "items": True,
    "events.dlq": False,
    "samples": False,
    "user-features": True,
    "cooc": False,
    "item-stats": True,
    "counters": False,  # item-counter exchange between workers (sealed buckets per source partition)
    "models": True,
    "changelog": True,  # each events partition's worker state (stream/changelog.py), restored by a new owner
}


def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Creates the flow's topics with settings.partitions partitions where missing; returns their full names."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = [settings.topic(n) for n in (names or list(TOPICS))]
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000,
                             **kafka_security.kafka_python(settings))
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            new = []
            for full in missing:
                logical = full[len(settings.topic_prefix):]
                config = {"cleanup.policy": "compact"} if TOPICS.get(logical) else {}
                new.append(NewTopic(full, num_partitions=settings.partitions, replication_factor=1,
                                    topic_configs=config))
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
            log.info("created topics %s", ", ".join(missing))
    finally:
        admin.close()
    return wanted
