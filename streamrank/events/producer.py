"""Publishing events and catalog items to Kafka (kafka-python), with validation, a rate limit and a report.

Events go to `settings.topic("events")` keyed by user_id (so one user's events stay in order on one
partition); items go to the compacted `settings.topic("items")` keyed by item_id. Every event is checked
with the same rules the stream worker applies (`check_event` and the size limit) before it is sent:
an invalid event is not sent, it is counted under its reason and the first few are kept as examples.
With `strict=True` the first invalid event stops the run instead (after flushing what was sent).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from streamrank import kafka_security
from streamrank.config import Settings
from streamrank.data.dataset import MOVIELENS_PREFIX
from streamrank.events.validate import OVERSIZED, InvalidEvent, check_event, decode_item
from streamrank.v1 import events_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_EXAMPLES = 5
_PROGRESS_EVERY = 1024


@dataclass
class ProduceReport:
    """What a produce run did: messages acknowledged, rejected before sending (by reason), failed sends."""

    topic: str
    sent: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def invalid_total(self) -> int:
        """Number of messages rejected by validation (never sent)."""
        return sum(self.invalid.values())

    @property
    def rate(self) -> float:
        """Messages acknowledged per second of wall time."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One human-readable line for logs and the CLI."""
        text = f"{self.topic}: sent {self.sent} in {self.seconds:.1f}s ({self.rate:,.0f}/s)"
        if self.invalid:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.invalid.items()))
            text += f"; invalid {self.invalid_total} ({reasons})"
        if self.failed:
            text += f"; failed {self.failed}"
        return text


class ProduceError(RuntimeError):
    """A produce run stopped: an invalid message under strict=True, or the broker refused messages."""

    def __init__(self, message: str, report: ProduceReport) -> None:
        super().__init__(message)
        self.report = report


class TokenBucket:
    """Rate limiter: `rate` tokens per second, at most `burst` saved up (default: 50 ms worth, >= 1).

    Sleeps only when the bucket is empty, for long enough to refill a few milliseconds' worth, so it
    stays accurate over seconds without a syscall per message at high rates.
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = float(rate)
        self.burst = max(1.0, burst if burst is not None else rate * 0.05)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    def acquire(self, n: float = 1.0) -> None:
        """Blocks until `n` tokens are available and takes them."""
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= n:
                self._tokens -= n
                return
            self._sleep(max((n - self._tokens) / self.rate, 0.001))


def make_producer(settings: Settings, **overrides: Any) -> Any:
    """A kafka-python KafkaProducer tuned for bulk loads (linger 20 ms, 256 KiB batches, acks=1)."""
    from kafka import KafkaProducer

    if not settings.bootstrap_servers:
        raise ValueError("settings.bootstrap_servers is empty: start or configure a broker first")
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "acks": 1,
        # stated, so kafka-python does not warn per producer that acks=1 turns its idempotent default off:
        # events carry their event_id and the worker drops duplicates, so a retried send loses nothing
        "enable_idempotence": False,
        "compression_type": None,
        "max_request_size": 4 * 1024 * 1024,
        "client_id": "streamrank-producer",
        **kafka_security.kafka_python(settings),
    }
    config.update(overrides)
    return KafkaProducer(**config)


def _progress(total: int | None, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    # disable=None lets tqdm switch itself off when stderr is not a terminal (CI logs, pipes).
    return tqdm(total=total, desc=desc, unit="msg", unit_scale=True, file=sys.stderr,
                disable=None if enabled else True, mininterval=0.5)


def known_length(values: Iterable[Any]) -> int | None:
    """len(values) when the iterable knows it (a list, a SizedIterator), else None (for progress totals)."""
    try:
        return len(values)  # type: ignore[arg-type]
    except TypeError:
        return None


def _run(settings: Settings, topic: str, values: Iterable[T],
         encode: Callable[[T], tuple[bytes, bytes]], rate: float | None, progress: bool,
         strict: bool, desc: str) -> ProduceReport:
    """Shared loop: validate+encode each value, send it, rate-limit, show progress, flush, report."""
    report = ProduceReport(topic=topic)
    invalid: Counter[str] = Counter()
    failures: list[BaseException] = []
    bucket = TokenBucket(rate) if rate else None
    producer = make_producer(settings)
    bar = _progress(known_length(values), progress, desc)
    submitted = 0
    pending_ticks = 0
    started = time.monotonic()

    def on_error(exc: BaseException) -> None:
        failures.append(exc)

    try:
        for value in values:
            pending_ticks += 1
            try:
                key, payload = encode(value)
            except InvalidEvent as exc:
                invalid[exc.reason] += 1
                if len(report.examples) < MAX_EXAMPLES:
                    ident = getattr(value, "event_id", "") or getattr(value, "item_id", "") or "?"
                    report.examples.append(f"{ident}: {exc}")
                    log.warning("not sent (invalid): %s: %s", ident, exc)
                if strict:
                    report.invalid = dict(invalid)
                    raise ProduceError(f"invalid message {report.examples[-1]}", report) from exc
                continue
            if bucket is not None:
                bucket.acquire()
            producer.send(topic, key=key, value=payload).add_errback(on_error)
            submitted += 1
            if pending_ticks >= _PROGRESS_EVERY:
                bar.update(pending_ticks)
                pending_ticks = 0
                if invalid:
                    bar.set_postfix(invalid=sum(invalid.values()), refresh=False)
    finally:
        bar.update(pending_ticks)
        bar.close()
        try:
            producer.flush()
        finally:
            producer.close()
        report.seconds = time.monotonic() - started
        report.invalid = dict(invalid)
        report.failed = len(failures)
        report.sent = submitted - report.failed
    if failures:
        log.error("%d messages were not delivered to %s; first error: %r", len(failures), topic, failures[0])
        raise ProduceError(f"{len(failures)} messages not delivered to {topic}: {failures[0]!r}", report)
    log.debug("%s", report.summary())  # the caller prints it (the CLI, the demo): once is enough
    return report


def produce_events(settings: Settings, events: Iterable[events_pb2.Event], rate: float | None = None,
                   progress: bool = True, strict: bool = False) -> ProduceReport:
    """Validates and publishes events to the events topic, keyed by user_id; returns a ProduceReport.

    `rate` caps the send rate (events/s, token bucket). Invalid events (check_event, size limit) are
    not sent: counted per reason in the report (`strict=True`: ProduceError at the first one).
    Raises ProduceError if the broker failed to take some messages (the report is attached).
    """
    limit = settings.max_event_bytes

    def encode(event: events_pb2.Event) -> tuple[bytes, bytes]:
        check_event(event, settings)
        payload = event.SerializeToString()
        if len(payload) > limit:
            raise InvalidEvent(OVERSIZED, f"{len(payload)} bytes (limit {limit})")
        return event.user_id.encode("utf-8"), payload

    return _run(settings, settings.topic("events"), events, encode, rate, progress, strict, "events")


def produce_items(settings: Settings, items: Iterable[events_pb2.Item], progress: bool = True,
                  strict: bool = False) -> ProduceReport:
    """Validates and publishes catalog items to the compacted items topic, keyed by item_id."""

    def encode(item: events_pb2.Item) -> tuple[bytes, bytes]:
        payload = item.SerializeToString()
        decode_item(payload, settings)  # the worker's rules: id present and short, price, size
        return item.item_id.encode("utf-8"), payload

    return _run(settings, settings.topic("items"), items, encode, None, progress, strict, "items")


class Source(NamedTuple):
    """What to publish: catalog items (None when the source has no catalog) and events."""

    items: Iterable[events_pb2.Item] | None
    events: Iterable[events_pb2.Event]


def open_source(spec: str, items_path: str | None = None, fmt: str | None = None, negatives: int = 1,
                seed: int = 0, scenario_field: str | None = "auto", limit: int | None = None,
                on_error: Callable[[Exception], None] | None = None, as_is: bool = False,
                sampling: str = "popularity", pool: str = "log", order: str = "sort") -> Source:
    """Turns a CLI source spec into (items or None, events).

    - ``movielens:ml-100k`` / ``movielens:ml-1m``: the MovieLens request stream (`negatives`, `seed`,
      `scenario_field`, `limit` in ratings) and its catalog.
    - anything else is a path to a JSON-lines or CSV event log (`fmt` or the extension decides), loaded
      through the dataset layer (`streamrank.data.eventlog_dataset`: time order checked, sorted or refused
      by `order`). A log with impressions is published as it is (`limit` in events); an interaction-only
      log (clicks, orders) becomes a request stream with `negatives` sampled per interaction (`sampling`,
      `pool`; `limit` in interactions), since samples come only from impressions. Catalog items come
      from `items_path`, else (interaction-only logs) from the items the log names.
    - `as_is=True` streams a file's events unchanged (no order check, no request stream), reading bad
      rows into `on_error` when given instead of stopping.
    """
    from streamrank.data.eventlog import detect_format, read_events, read_items

    if spec.startswith(MOVIELENS_PREFIX):
        from streamrank.data.movielens import DATASETS

        name = spec[len(MOVIELENS_PREFIX):]
        if name not in DATASETS:
            raise ValueError(f"unknown MovieLens data set {name!r} in {spec!r}; expected one of "
                             f"{', '.join(MOVIELENS_PREFIX + d for d in DATASETS)}")
    else:
        for path in (spec, items_path):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"no such event log: {path} (or use {MOVIELENS_PREFIX}ml-100k / ml-1m)")
        detect_format(spec, fmt)  # fail now, not at the first message, when the format is unknown
        if items_path:
            detect_format(items_path)
    if as_is and not spec.startswith(MOVIELENS_PREFIX):
        events_iter: Iterator[events_pb2.Event] = read_events(spec, fmt, on_error)
        if limit is not None:
            events_iter = _take(events_iter, limit)
        return Source(read_items(items_path, None, on_error) if items_path else None, events_iter)
    from streamrank.data.dataset import load_dataset
    from streamrank.data.requests import catalog_items, log_events

    data = load_dataset(spec, None if spec.startswith(MOVIELENS_PREFIX) else items_path, fmt, order=order)
    events = log_events(data, limit=limit, negatives=negatives, seed=seed, scenario_field=scenario_field,
                        sampling=sampling, pool=pool)
    if items_path:
        items: Iterable[events_pb2.Item] | None = read_items(items_path, None, on_error)
    else:
        items = None if data.has_impressions else catalog_items(data)
    return Source(items, events)


def _take(values: Iterator[T], limit: int) -> Iterator[T]:
    for index, value in enumerate(values):
        if index >= limit:
            return
        yield value
