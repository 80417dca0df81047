"""Freshness: from an event's production to the first version trained on it (see streamrank.bench.train)."""

from __future__ import annotations

import heapq
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, NamedTuple

from streamrank.bench.freshness_served import RankProbe, ServedAt, first_covering
from streamrank.bench.trainbench_common import machine, percentile
from streamrank.config import Settings, load_settings
from streamrank.v1 import events_pb2, features_pb2


class LiveTraffic:
    """A live request stream: impressions now, a click on one of them a moment later; event time = wall clock.

    A request of a random user shows `impressions` items (popularity-skewed); going down the slate, each
    item is clicked with probability 0.03 + 0.45 x (one of the `hot` categories) + 0.25 x (one of the user's
    two favourite categories), and the first click ends the slate (at most one click per request). The
    click is sent 0.1 s to `click_delay_s` later. The labels are thus learnable within seconds (a steady
    prequential AUC keeps the guardrail from blocking on noise). Each request advances the schedule by
    its own number of events / `rate`, so the stream averages `rate` events/s. Phases: warm-up (at least
    `warmup_s`, and until `ready()` says the pipeline has published), the measured interval of
    `duration_s`, then `tail_s` more traffic so that the measured requests' attribution windows close.
    `check()` is called about twice a second and may raise to stop the stream (a child process died).
    """

    def __init__(self, rate: float, warmup_s: float, duration_s: float, tail_s: float, click_delay_s: float,
                 ready: Callable[[], bool], check: Callable[[], None] = lambda: None, users: int = 2000,
                 items: int = 1000, categories: int = 20, hot: int = 5, impressions: int = 3, seed: int = 0,
                 max_warmup_s: float = 180.0) -> None:
        self.rate, self.warmup_s, self.duration_s, self.tail_s = rate, warmup_s, duration_s, tail_s
        self.click_delay_s = click_delay_s
        self.ready, self.check = ready, check
        self.users, self.items, self.categories, self.hot = users, items, categories, hot
        self.impressions, self.seed, self.max_warmup_s = impressions, seed, max_warmup_s
        self.measure_start_ms = 0
        self.measure_end_ms = 0
        self.requests = 0
        self.clicks = 0
        self.click_ts: dict[str, int] = {}  # request id -> when its click was sent

    def __iter__(self) -> Iterator[events_pb2.Event]:
        rng = random.Random(self.seed)
        fav = [set(rng.sample(range(self.categories), 2)) for _ in range(self.users)]
        catalog = range(self.items)
        popularity = list(itertools.accumulate(1.0 / (rank + 1) ** 0.7 for rank in catalog))  # a skew
        pending: list[tuple[float, int, events_pb2.Event]] = []  # (due, request number, click)
        started = time.time()
        next_request = started
        next_check = started
        stop_at = float("inf")
        while True:
            now = time.time()
            if now >= next_check:
                next_check = now + 0.5
                self.check()
                if not self.measure_start_ms and now - started >= self.warmup_s and self.ready():
                    self.measure_start_ms = int(now * 1000)
                    self.measure_end_ms = self.measure_start_ms + int(self.duration_s * 1000)
                    stop_at = now + self.duration_s + self.tail_s
                elif not self.measure_start_ms and now - started > self.max_warmup_s:
                    raise RuntimeError(f"no version was published within {self.max_warmup_s:.0f}s of traffic")
            due = min(next_request, pending[0][0]) if pending else next_request
            if due >= stop_at:
                return
            if due > now:
                time.sleep(min(due - now, 0.05))
                continue
            ts = int(time.time() * 1000)
            if pending and pending[0][0] <= next_request:
                click = heapq.heappop(pending)[2]
                click.ts_ms = ts
                self.clicks += 1
                self.click_ts[click.request_id] = ts
                yield click
                continue
            n = self.requests
            self.requests += 1
            user = rng.randrange(self.users)
            shown: list[int] = []
            while len(shown) < self.impressions:
                item = rng.choices(catalog, cum_weights=popularity)[0]
                if item not in shown:
                    shown.append(item)
            common = {"user_id": f"u{user}", "session_id": f"u{user}/s0", "request_id": f"r{n}",
                      "scenario": "web"}
            events = [events_pb2.Event(event_id=f"r{n}-imp-{position}", item_id=f"i{item}",
                                       type=events_pb2.IMPRESSION, ts_ms=ts, position=position,
                                       item={"category": f"c{item % self.categories}"}, **common)
                      for position, item in enumerate(shown)]
            clicked = False
            for position, item in enumerate(shown):
                cat = item % self.categories
                if rng.random() < 0.03 + 0.45 * (cat < self.hot) + 0.25 * (cat in fav[user]):
                    click = events_pb2.Event(event_id=f"r{n}-clk", item_id=f"i{item}", type=events_pb2.CLICK,
                                             position=position, item={"category": f"c{cat}"}, **common)
                    heapq.heappush(pending, (ts / 1000 + rng.uniform(0.1, self.click_delay_s), n, click))
                    clicked = True
                    break
            next_request += (len(events) + clicked) / self.rate
            yield from events


class SampleRow(NamedTuple):
    """One samples-topic record, as freshness needs it."""

    partition: int
    offset: int
    impression_ts_ms: int
    record_ts_ms: int  # when the worker's producer sent it
    emission: int
    request_id: str
    clicked: bool
    emitted_ts_ms: int


def read_samples(settings: Settings, ends: dict[int, int]) -> list[SampleRow]:
    """Every samples-topic record up to `ends`."""
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topic("samples")
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             max_poll_records=10_000, fetch_max_bytes=32 * 1024 * 1024)
    try:
        tps = [TopicPartition(topic, p) for p, end in ends.items() if end > 0]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out = []
        sample = features_pb2.TrainingSample()
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp.partition] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError("reading the samples topic back took more than 120 s")
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    if rec.offset >= ends[rec.partition]:
                        continue
                    sample.ParseFromString(rec.value)
                    out.append(SampleRow(rec.partition, rec.offset, sample.impression_ts_ms, rec.timestamp,
                                         sample.emission, sample.request_id, sample.labels.click,
                                         sample.emitted_ts_ms))
        return out
    finally:
        consumer.close()


def _versions(settings: Settings, model: str) -> list[tuple[dict[str, int], int, int]]:
    from streamrank.registry.store import Registry

    registry = Registry(settings.registry_root(), model)
    out = []
    for v in registry.list_versions():
        info = registry.info(v)
        out.append((info.meta.get("offsets", {}), info.created_ms, v))
    return out


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def measured_rows(rows: Sequence[SampleRow], policy: str, click_ts: Mapping[str, int], start_ms: int,
                  end_ms: int) -> tuple[list[tuple[SampleRow, int]], list[tuple[SampleRow, int]]]:
    """(every sample, the positives), each row with the time its freshness counts from, in [start, end).

    Every sample: its first learnable emission (fake_negative: the provisional negative; window: the
    window-closed sample), from the impression. Positives: the emission that first carries the click
    (fake_negative: the positive emission, from the click it answers; window: the window-closed sample
    with its click, from the click as the traffic sent it)."""
    first = features_pb2.EMISSION_IMPRESSION if policy == "fake_negative" else features_pb2.EMISSION_WINDOW_CLOSED
    every = [(r, r.impression_ts_ms) for r in rows if r.emission == first]
    if policy == "fake_negative":
        positives = [(r, r.emitted_ts_ms) for r in rows if r.emission == features_pb2.EMISSION_POSITIVE and r.clicked]
    else:
        positives = [(r, click_ts[r.request_id]) for r, _ in every if r.clicked and r.request_id in click_ts]
    keep = [(r, t) for r, t in every if start_ms <= t < end_ms]
    return keep, [(r, t) for r, t in positives if start_ms <= t < end_ms]


def served_ms(rows: Sequence[tuple[SampleRow, int]], versions: Sequence[tuple[dict[str, int], int, int]],
              served_at: ServedAt) -> list[tuple[int, int] | None]:
    """Per row: (ms to the first version that learned it, ms to the first Rank answer with that version or a
    later one), or None while either is missing."""
    found = first_covering([(r.partition, r.offset) for r, _ in rows], versions)
    out: list[tuple[int, int] | None] = []
    for (_, t), f in zip(rows, found, strict=True):
        served = None if f is None else served_at(f[1])
        out.append(None if f is None or served is None else (f[0] - t, served - t))
    return out


def freshness_run(settings: Settings, model: str, rate: float, warmup_s: float, duration_s: float,
                  drain_s: float, seed: int = 0, progress: bool = True) -> dict:
    """One run: worker, trainer and scorer as processes, live traffic and a Rank probe, then every measured
    sample's time to its first version and to the first Rank answer with it (`served_ms`)."""
    from streamrank.events.producer import produce_events
    from streamrank.pipeline import end_offsets, start_scorer, start_trainer, start_worker, stop_worker
    from streamrank.registry.store import Registry
    from streamrank.topics import ensure_topics
    from streamrank.train.online import trainer_dir

    ensure_topics(settings)
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    logs = {name: data / f"{name}.log" for name in ("worker", "trainer", "scorer")}
    procs = {"worker": start_worker(settings, logs["worker"]),
             "trainer": start_trainer(settings, model, logs["trainer"]),
             "scorer": start_scorer(settings, logs["scorer"], wait=False)}
    registry = Registry(settings.registry_root(), model)
    probe = RankProbe(f"{settings.serve_host}:{settings.serve_port}", model)
    probe.start()

    def check() -> None:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"the {name} exited with code {proc.returncode}:\n{_tail(logs[name])}")

    status_file = trainer_dir(settings, model) / "status.json"

    def trainer_status() -> dict:
        try:
            return json.loads(status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    at_start: dict[str, Any] = {}

    def ready() -> bool:
        if registry.latest_version() is None or not probe.newest_version:
            return False
        at_start.update(trainer_status())  # the guardrail's count when the measured interval begins
        return True

    policy = settings.label_policy
    tail_s = 3.0 + (settings.attribution_window_ms / 1000 if policy == "window" else 0.0)
    traffic = LiveTraffic(rate, warmup_s, duration_s, tail_s=tail_s, click_delay_s=1.5, ready=ready, check=check,
                          seed=seed)
    try:
        report = produce_events(settings, traffic, progress=False, strict=True)
        if progress:
            print(f"  produced {report.sent:,} events ({report.rate:,.0f}/s); measuring "
                  f"{duration_s:.0f}s from {traffic.measure_start_ms}", flush=True)
        time.sleep(settings.batch_within_s + 1.0)  # the worker's last batch reaches the samples topic
        rows = read_samples(settings, end_offsets(settings, settings.topic("samples")))
        every, positives = measured_rows(rows, policy, traffic.click_ts, traffic.measure_start_ms,
                                         traffic.measure_end_ms)
        deadline = time.monotonic() + drain_s
        while True:
            check()
            versions = _versions(settings, model)
            served_at = ServedAt(list(probe.responses))
            fresh = served_ms(every, versions, served_at)
            fresh_pos = served_ms(positives, versions, served_at)
            if all(f is not None for f in fresh + fresh_pos) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        probe.stop()
        for name in ("scorer", "trainer", "worker"):
            stop_worker(procs[name])
    status = trainer_status()
    return {**_summary(fresh, fresh_pos, [r for r, _ in every]), "events_sent": report.sent,
            "events_per_s": report.rate, "requests": traffic.requests, "clicks": traffic.clicks,
            "samples_per_s": len(every) / duration_s, "probes": len(probe.responses), "probe_failures": probe.failures,
            "versions": sum(c >= traffic.measure_start_ms for _, c, _ in versions), "versions_total": len(versions),
            "blocked": status.get("blocked", 0) - at_start.get("blocked", 0),
            "prequential_auc": status.get("metrics", {}).get("prequential_auc"),
            "samples_learned": status.get("metrics", {}).get("samples_learned")}


def _summary(fresh: list[tuple[int, int] | None], fresh_pos: list[tuple[int, int] | None],
             rows: list[SampleRow]) -> dict[str, float]:
    """Percentiles of one run (ms): to the version, to the served answer, for every sample and for positives."""
    covered = [f for f in fresh if f is not None]
    pos = [f for f in fresh_pos if f is not None]
    to_topic = [r.record_ts_ms - r.impression_ts_ms for r in rows]
    return {
        "samples": len(fresh), "covered": len(covered), "not_covered": len(fresh) - len(covered),
        "positives": len(fresh_pos), "positives_not_covered": len(fresh_pos) - len(pos),
        "p50_ms": percentile([v for v, _ in covered], 50), "p95_ms": percentile([v for v, _ in covered], 95),
        "served_p50_ms": percentile([s for _, s in covered], 50),
        "served_p95_ms": percentile([s for _, s in covered], 95),
        "served_max_ms": float(max((s for _, s in covered), default=float("nan"))),
        "positives_served_p50_ms": percentile([s for _, s in pos], 50),
        "positives_served_p95_ms": percentile([s for _, s in pos], 95),
        "pickup_p50_ms": percentile([s - v for v, s in covered], 50),
        "to_topic_p50_ms": percentile(to_topic, 50),
        "mean_served_ms": float(statistics.mean(s for _, s in covered)) if covered else float("nan"),
    }


def freshness_settings(broker: str, data_dir: Path, run: str, policy: str, window_ms: int, model: str = "din",
                       guardrail_margin: float | None = None) -> Settings:
    """The latency-tuned settings of a freshness run (shared by worker, trainer and scorer via env vars)."""
    from streamrank.broker import free_port

    overrides: dict[str, Any] = {
        "bootstrap_servers": broker, "topic_prefix": f"fresh{run}.", "worker_id": f"fresh-worker-{run}",
        "data_dir": str(data_dir), "batch_within_s": 0.2, "attribution_window_ms": window_ms, "label_policy": policy,
        "train_batch_within_s": 0.5, "checkpoint_every_s": 2.0, "publish_every_s": 2.0,
        "min_samples_to_publish": 200, "registry_keep": 100_000,  # every version stays, to be looked up
        "serve_port": free_port(), "serve_metrics_port": 0, "serve_retrieval": "", "serve_models": model,
        "serve_poll_s": 0.25, "train_torch_threads": 1,
    }
    if guardrail_margin is not None:
        overrides["guardrail_margin"] = guardrail_margin
    return load_settings(**overrides)


SETTING_NAMES = ("batch_within_s", "batch_size", "train_batch_size", "train_batch_within_s", "checkpoint_every_s",
                 "checkpoint_every_steps", "publish_every_s", "min_samples_to_publish", "guardrail_margin",
                 "train_fake_negative", "train_torch_threads", "serve_poll_s", "partitions")
# (label policy, attribution window ms) measured; the window policy with 1 h is derived (see write_freshness)
CASES = (("fake_negative", 3_600_000), ("fake_negative", 2_000), ("window", 2_000))
KEYS = ("served_p50_ms", "served_p95_ms", "positives_served_p50_ms", "positives_served_p95_ms", "p50_ms", "p95_ms",
        "pickup_p50_ms", "to_topic_p50_ms", "events_per_s")


def run_freshness(model: str = "din", runs: int = 2, rate: float = 800.0, warmup_s: float = 30.0,
                  duration_s: float = 60.0, drain_s: float = 30.0, guardrail_margin: float | None = None,
                  cases: Sequence[tuple[str, int]] = CASES, progress: bool = True) -> dict:
    """Every (policy, window) case `runs` times on one embedded broker (a fresh topic prefix and data dir each)."""
    from streamrank.broker import EmbeddedBroker

    out: dict[str, dict[str, Any]] = {}
    settings: Settings | None = None
    with TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        for policy, window_ms in cases:
            rows = []
            for i in range(runs):
                name = f"{policy}-{window_ms}-{i}"
                settings = freshness_settings(broker.bootstrap_servers, Path(tmp) / name, name.replace("_", ""),
                                              policy, window_ms, model, guardrail_margin)
                row = {"run": i + 1, **freshness_run(settings, model, rate, warmup_s, duration_s, drain_s, seed=i,
                                                     progress=progress)}
                rows.append(row)
                if progress:
                    print(f"{policy}, window {window_ms / 1000:g} s, run {i + 1}/{runs}: served p50 "
                          f"{row['served_p50_ms']:,.0f} ms, p95 {row['served_p95_ms']:,.0f} ms, positives p95 "
                          f"{row['positives_served_p95_ms']:,.0f} ms ({row['not_covered']} not covered); "
                          f"{row['versions']} versions, {row['blocked']} blocked", flush=True)
            case = {k: statistics.median(r[k] for r in rows) for k in KEYS}
            out.setdefault(policy, {})[window_key(window_ms)] = {
                **{f"{k[:-3]}_s": case[k] / 1000 for k in KEYS if k.endswith("_ms")},
                "events_per_s": case["events_per_s"], "attribution_window_ms": window_ms, "derived": False,
                "runs": rows}
    assert settings is not None
    return {"model": model, "policies": out, "rate": rate, "warmup_s": warmup_s, "duration_s": duration_s,
            "runs": runs, "settings": {k: getattr(settings, k) for k in SETTING_NAMES},
            "machine": machine(), "date": time.strftime("%Y-%m-%d")}


def window_key(window_ms: int) -> str:
    """The JSON key of an attribution window: window_2s, window_3600s."""
    return f"window_{window_ms / 1000:g}s"
