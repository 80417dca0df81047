"""The Faust application of `streamrank worker`: the catalog agent, the events service and status reporting."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import faust

from streamrank import kafka_security
from streamrank.config import Settings
from streamrank.events.validate import InvalidEvent, decode_item
from streamrank.observability import Series, serve_metrics
from streamrank.stream.processor import BatchProcessor
from streamrank.stream.service import EventsService
from streamrank.stream.store import StateStore
from streamrank.v1 import events_pb2

log = logging.getLogger(__name__)

# aiokafka/faust create debug log records even when the handler drops them (~11% of CPU): silence at source.
for _noisy in ("aiokafka", "faust", "mode", "kafka"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def worker_dir(settings: Settings) -> Path:
    """Where this worker keeps RocksDB and its status file."""
    return Path(settings.data_dir) / "worker" / settings.worker_id


def status_path(settings: Settings) -> Path:
    """The JSON status file the worker rewrites every second (offsets, counters)."""
    return worker_dir(settings) / "status.json"


class Worker:
    """Builds the Faust app with its agents and services over one RocksDB store."""

    def __init__(self, settings: Settings, replica: str | None = None) -> None:
        """`replica` names one of several replicas of the worker group (its state slot): the catalog agent
        then consumes in a group of its own, so every replica reads the whole catalog, not a share of its
        partitions. The events consumer's group stays `<worker_id>.events`, shared by the replicas."""
        if not settings.bootstrap_servers:
            raise ValueError("the worker needs bootstrap_servers (the CLI starts an embedded broker)")
        self.settings = settings
        base = worker_dir(settings)
        base.mkdir(parents=True, exist_ok=True)
        self.store = StateStore(base / "state")
        self.processor = BatchProcessor(settings, self.store)
        self.app = faust.App(
            settings.worker_id if replica is None else f"{settings.worker_id}.{replica}",
            broker=f"kafka://{settings.bootstrap_servers}",
            store="rocksdb://",
            datadir=str(base / "faust"),
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=settings.partitions,
            broker_session_timeout=10,
            broker_heartbeat_interval=2,
            consumer_auto_offset_reset="earliest",
            web_enabled=False,
            broker_credentials=kafka_security.faust_credentials(settings),
        )
        self.events = EventsService(settings, self.processor, loop=self.app.loop, beacon=self.app.beacon)
        self.app.add_dependency(self.events)
        self.item_dead_letters = 0
        self._register_agents()
        self._started = time.time()

    def _register_agents(self) -> None:
        settings = self.settings
        items_topic = self.app.topic(settings.topic("items"), key_type=bytes, value_type=bytes)
        dlq_topic = self.app.topic(settings.topic("events.dlq"), key_type=bytes, value_type=bytes)

        @self.app.agent(items_topic, name="catalog")
        async def catalog(stream: Any) -> None:
            """Keeps the item catalog: a compacted topic folded into RocksDB in batches."""
            async for events in stream.take_events(5000, within=0.5):
                good: dict[str, events_pb2.Item] = {}
                for event in events:
                    try:
                        item = decode_item(event.value, settings)
                    except InvalidEvent as exc:
                        self.item_dead_letters += 1
                        await dlq_topic.send(key=event.key, value=event.value or b"", headers={
                            "x-reason": exc.reason.encode(), "x-detail": exc.detail.encode()[:1000],
                            "x-source-topic": settings.topic("items").encode(),
                        })
                        continue
                    good[item.item_id] = item
                if good:
                    self.store.put_items(good)

        @self.app.timer(interval=1.0)
        async def report() -> None:
            """Rewrites the status file and logs progress."""
            self.write_status()

    def status(self) -> dict[str, Any]:
        """Counters, durable offsets and catalog size, as written to the status file."""
        events = self.events
        return {
            "worker_id": self.settings.worker_id,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self._started, 1),
            "offsets": {f"{t}:{p}": o for (t, p), o in sorted(self.processor.durable_offsets.items())},
            "counters": dict(events.counters),
            "catalog_items": len(self.store.catalog_cache),
            "item_dead_letters": self.item_dead_letters,
            "idle": events.idle.is_set(),
            "first_record_at": events.first_record_at,
            "last_batch_at": events.last_batch_at,
            "late_stat_events": self.processor.stats.late,
            # Impressions waiting for the counters' frontier (0 once every partition caught up and went idle).
            "waiting_impressions": len(self.processor.waiting),
            "counter_frontier_ms": self.processor.counters.frontier,
            "assigned_partitions": sorted(self.processor.assigned or ()),
            # Partitions read back from the changelog since start (each: records, users, offsets, seconds).
            "changelog_restores": list(events.restores),
        }

    def metric_series(self) -> list[Series]:
        """The worker's Prometheus series (read at scrape time; `streamrank.observability`)."""
        events, c = self.events, self.events.counters
        outcome = [({"outcome": k}, c[k]) for k in ("processed", "duplicates", "replayed", "dead_letters")]
        return [
            Series("streamrank_worker_records_total", "Events-topic records handled", "counter", [({}, c["records"])]),
            Series("streamrank_worker_events_total", "Events by outcome", "counter", outcome, ("outcome",)),
            Series("streamrank_worker_dead_letters_total", "Events sent to the dead-letter topic, by reason",
                   "counter", [({"reason": r}, n) for r, n in sorted(events.dead_by_reason.items())], ("reason",)),
            Series("streamrank_worker_batch_seconds", "Time to handle one micro-batch (process, send, commit)",
                   "summary", [({}, (c["batches"], events.batch_seconds))]),
            Series("streamrank_worker_lag_records", "Records behind the partition's high watermark", "gauge",
                   [({"partition": str(p)}, n) for p, n in sorted(events.lag.items())], ("partition",)),
            Series("streamrank_worker_waiting_impressions", "Impressions waiting for the item counters' frontier",
                   "gauge", [({}, len(self.processor.waiting))]),
            Series("streamrank_worker_counter_frontier_ms", "Effective event time below which item counters are "
                   "complete", "gauge", [({}, self.processor.counters.frontier)]),
            Series("streamrank_worker_catalog_items", "Items in the catalog", "gauge",
                   [({}, len(self.store.catalog_cache))]),
            Series("streamrank_worker_item_dead_letters_total", "Catalog records refused", "counter",
                   [({}, self.item_dead_letters)]),
        ]

    def write_status(self) -> None:
        """Atomically replaces status.json."""
        path = status_path(self.settings)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1))
        os.replace(tmp, path)

    def run(self, loglevel: str = "warning") -> None:
        """Runs until SIGINT/SIGTERM; the store is closed on the way out."""
        # override_logging=False: the CLI's logging stays (one format for every library); mode's own set-up
        # would replace it with colorlog handlers that write terminal escape codes into log files
        worker = faust.Worker(self.app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                              override_logging=False)
        worker.spinner = None  # Faust's start-up spinner writes terminal escape codes, into log files too

        @self.app.on_before_shutdown.connect  # type: ignore[misc]
        def _close(*_: Any, **__: Any) -> None:
            self.write_status()

        if self.settings.worker_metrics_port:
            port, _ = serve_metrics(self.metric_series, self.settings.metrics_host, self.settings.worker_metrics_port)
            log.info("worker metrics on %s:%d/metrics", self.settings.metrics_host, port)
        try:
            worker.execute_from_commandline()
        finally:
            self.store.close()
