"""Prometheus metrics of one scorer: latency per method, responses per status code, versions, replica lag.

Each scorer owns a CollectorRegistry (several servers can live in one process, as in tests) and exposes it
over HTTP on loopback by default.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from streamrank.serve.replica import ReplicaStatus

# Latency buckets (seconds): fine below 50 ms, where a healthy scorer lives.
_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class ScorerMetrics:
    """The scorer's metric families (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # model / version: what answered ("" when a call failed before a model was chosen: bad bytes, a refusal,
        # an unknown model name, which never becomes a label of its own)
        self.latency = Histogram("streamrank_request_seconds", "Time to answer a call",
                                 ["method", "model", "version"], buckets=_BUCKETS, registry=r)
        self.responses = Counter("streamrank_responses", "Calls answered, by status code",
                                 ["method", "code", "model", "version"], registry=r)
        self.candidates = Histogram("streamrank_rank_candidates", "Candidates per Rank call",
                                    buckets=(1, 10, 50, 100, 200, 500, 1000), registry=r)
        self.batch_calls = Histogram("streamrank_batch_calls", "Calls answered by one batched forward / search",
                                     ["method"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64), registry=r)
        self.model_version = Gauge("streamrank_model_version", "Live version of each served model", ["model"],
                                   registry=r)
        self.index_version = Gauge("streamrank_index_version", "Live version of the retrieval model + index",
                                   ["index"], registry=r)
        self.index_recall = Gauge("streamrank_index_recall", "Recall@k of the live index against exact search",
                                  ["index"], registry=r)
        self.swaps = Counter("streamrank_model_swaps", "Versions swapped in", ["model"], registry=r)
        self.load_failures = Counter("streamrank_model_load_failures", "Versions refused at load", ["model"],
                                     registry=r)
        self.replica_lag = Gauge("streamrank_replica_lag_records", "Records the feature replica is behind",
                                 ["topic"], registry=r)
        self.replica_age = Gauge("streamrank_replica_newest_update_age_seconds",
                                 "Wall time since the event time of the newest user update replicated",
                                 registry=r)
        self._http: object | None = None
        self._series: dict[str, dict[str, set[tuple[str, str]]]] = {}  # model -> version -> (method, code)
        self._lock = threading.Lock()  # calls observe on the loop, swaps retire from the watcher thread

    def observe(self, method: str, code: str, seconds: float, model: str = "", version: str = "") -> None:
        """Records one answered call, under the model and version that answered it."""
        with self._lock:
            self.latency.labels(method, model, version).observe(seconds)
            self.responses.labels(method, code, model, version).inc()
            self._series.setdefault(model, {}).setdefault(version, set()).add((method, code))

    def retire_versions(self, model: str, keep: set[str]) -> None:
        """Drops the latency and response series of `model`'s versions not in `keep` (retired versions)."""
        with self._lock:
            versions = self._series.get(model, {})
            for version in [v for v in versions if v and v not in keep]:
                for method, code in versions.pop(version):
                    self.responses.remove(method, code, model, version)
                    with contextlib.suppress(KeyError):  # one latency series per method, several codes
                        self.latency.remove(method, model, version)

    def update_replica(self, status: ReplicaStatus) -> None:
        """Copies the replica's lag into the gauges."""
        for topic, lag in status.lag_records.items():
            self.replica_lag.labels(topic).set(lag)
        if status.newest_update_ms:
            self.replica_age.set(max(0.0, time.time() - status.newest_update_ms / 1000))

    def serve_http(self, host: str, port: int, certfile: str = "", keyfile: str = "") -> int:
        """Starts the /metrics endpoint (HTTPS with a certificate and key); returns the bound port (port 0
        picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry, certfile=certfile or None,
                                            keyfile=keyfile or None)
        self._http = server
        return int(server.server_address[1])

    def close(self) -> None:
        """Stops the HTTP endpoint."""
        server = self._http
        if server is not None:
            shutdown: Callable[[], None] = server.shutdown  # type: ignore[attr-defined]
            shutdown()
            server.server_close()  # type: ignore[attr-defined]
            self._http = None

    def text(self) -> str:
        """The exposition text (what /metrics returns)."""
        return generate_latest(self.registry).decode()
