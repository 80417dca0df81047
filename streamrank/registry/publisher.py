"""Publication policy: the guardrail, retention and the announcement on the models topic.

The trainer offers a version (files + metadata); this decides whether it goes live. A version whose
prequential AUC is significantly more than `guardrail_margin` below the live version's is refused (logged,
counted); too little evidence publishes (registry/guardrail.py). A published version is announced on the
compacted models topic, and old versions are pruned down to the live one plus `registry_keep`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from streamrank import kafka_security
from streamrank.config import Settings
from streamrank.registry.guardrail import Evidence, reference, refusal
from streamrank.registry.store import VersionInfo, open_registry
from streamrank.v1 import registry_pb2

log = logging.getLogger(__name__)


def announcement(info: VersionInfo, rollback: bool = False) -> registry_pb2.ModelAnnouncement:
    """The models-topic message for a version."""
    meta = info.meta
    msg = registry_pb2.ModelAnnouncement(
        model=info.model, version=info.version, checksum=info.checksum, path=str(info.path),
        created_ms=info.created_ms, samples_seen=int(meta.get("samples_learned", 0)),
        trained_through_ms=int(meta.get("trained_through_ms", 0)), rollback=rollback,
    )
    for k, v in meta.get("metrics", {}).items():
        if isinstance(v, int | float) and math.isfinite(v):
            msg.metrics[k] = float(v)
    return msg


class RegistryPublisher:
    """A trainer's Publisher backed by the registry, with the guardrail and announcements."""

    def __init__(self, settings: Settings, model: str, announce: bool = True) -> None:
        self.settings = settings
        self.registry = open_registry(settings, model)
        self.announce = announce and bool(settings.bootstrap_servers)
        self.blocked: list[dict[str, Any]] = []
        self._producer: Any = None

    def __call__(self, files: dict[str, bytes], meta: dict[str, Any]) -> bool:
        """Publishes the version unless the guardrail refuses it; returns whether it went live."""
        live = self.registry.current()
        s = self.settings
        candidate = Evidence.from_metrics(meta.get("metrics", {}))
        bar = None if live is None else Evidence.from_metrics(
            live.meta.get("guardrail_reference") or live.meta.get("metrics", {}))
        reason = refusal(candidate, bar, s.guardrail_margin, s.guardrail_min_per_class, s.guardrail_alpha)
        if reason is not None:
            self.blocked.append({"reason": reason, "steps": meta.get("steps")})
            log.warning("guardrail: %s not published: %s", self.registry.model, reason)
            return False
        passed_on = reference(candidate, bar, s.guardrail_min_per_class)
        if passed_on is not None:
            meta = {**meta, "guardrail_reference": passed_on.to_metrics()}
        info = self.registry.publish(files, meta)
        self.registry.prune(self.settings.registry_keep)
        log.info("published %s v%d (prequential AUC %.4f)", info.model, info.version, candidate.auc)
        if self.announce:
            self.send(announcement(info))
        return True

    def send(self, msg: registry_pb2.ModelAnnouncement) -> None:
        """Announces a version on the models topic (keyed by model name)."""
        from kafka import KafkaProducer

        if self._producer is None:
            # an announcement sent twice is harmless (readers compare versions): no idempotence, and no
            # warning from kafka-python that acks=1 turned it off
            self._producer = KafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks=1,
                                           enable_idempotence=False, **kafka_security.kafka_python(self.settings))
        self._producer.send(self.settings.topic("models"), key=msg.model.encode(), value=msg.SerializeToString())
        self._producer.flush(timeout=10)

    def close(self) -> None:
        """Closes the announcement producer."""
        if self._producer is not None:
            self._producer.close()
            self._producer = None
