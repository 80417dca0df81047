"""Prometheus `/metrics` for the worker and the trainer (the scorer has its own, `serve/metrics.py`), and
the steady progress line both write to their log (`ProgressLog`).

Each service hands a function that returns its current numbers; they are turned into metric families at
scrape time, so the hot loops only keep plain counters. Process metrics (CPU, memory, file descriptors) come
from prometheus_client's own collectors. Names follow the Prometheus conventions: `streamrank_<service>_...`,
`_total` for counters, base units (seconds, samples).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector


@dataclass
class Series:
    """One metric family: kind counter|gauge|summary, and its samples as (labels, value) pairs (a summary's
    value is (count, sum))."""

    name: str
    help: str
    kind: str
    samples: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    labels: tuple[str, ...] = ()


class _Collector(Collector):
    def __init__(self, read: Callable[[], Iterable[Series]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        for s in self._read():
            labels = list(s.labels)
            if s.kind == "counter":
                family: Any = CounterMetricFamily(s.name, s.help, labels=labels)
            elif s.kind == "gauge":
                family = GaugeMetricFamily(s.name, s.help, labels=labels)
            else:
                family = SummaryMetricFamily(s.name, s.help, labels=labels)
            for label_values, value in s.samples:
                values = [label_values[k] for k in labels]
                if s.kind == "summary":
                    family.add_metric(values, count_value=value[0], sum_value=value[1])
                else:
                    family.add_metric(values, float(value))
            yield family


def serve_metrics(read: Callable[[], Iterable[Series]], host: str, port: int) -> tuple[int, Any]:
    """Starts `/metrics` on host:port (0: a free port) with `read`'s series and the process metrics; returns
    (bound port, server). OSError names the port when it is busy."""
    from prometheus_client import PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    registry = CollectorRegistry(auto_describe=True)
    registry.register(PROCESS_COLLECTOR)
    registry.register(PLATFORM_COLLECTOR)
    registry.register(_Collector(read))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    return int(server.server_address[1]), server


class ProgressLog:
    """One INFO line every `every_s` seconds from a long-running loop (0: never), with per-second rates of its
    counters since the previous line, so an operator reading the log sees the service work without a
    metrics stack. `maybe` is cheap enough to call after every batch and on every idle poll; `base` holds
    the counters' values at start (a resumed trainer's), so the first rates are not inflated by them."""

    def __init__(self, logger: logging.Logger, every_s: float, base: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self.every_s, self._clock = logger, every_s, clock
        self._last_t = clock()
        self._last = dict(base or {})
        self.lines = 0

    def maybe(self, counters: Mapping[str, float],
              render: Callable[[Mapping[str, float], Mapping[str, float]], str]) -> bool:
        """Logs `render(counters, rates per second)` if a line is due; True when it logged."""
        if self.every_s <= 0:
            return False
        now = self._clock()
        elapsed = now - self._last_t
        if elapsed < self.every_s:
            return False
        rates = {k: (float(v) - self._last.get(k, 0.0)) / elapsed for k, v in counters.items()}
        self._log.info(render(counters, rates))
        self._last_t, self._last = now, {k: float(v) for k, v in counters.items()}
        self.lines += 1
        return True
