"""Freshness: from an event's production to the first version trained on it (see streamrank.bench.train)."""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from streamrank.bench.trainbench_common import DOCS, machine, percentile
from streamrank.config import Settings, load_settings
from streamrank.v1 import events_pb2, features_pb2


def freshness_ms(samples: Sequence[tuple[int, int, int]],
                 versions: Iterable[tuple[Mapping[Any, int], int]]) -> list[int | None]:
    """Freshness of each sample: when the first version trained on it was created, minus its impression time.

    samples: (partition, offset, impression_ts_ms) of samples-topic records. versions: (offsets, created_ms)
    of registry versions, where offsets maps partition (int or str, as JSON leaves it) to the next offset
    of that partition the version had consumed. A version covers a sample when offsets[partition] > the
    sample's offset; the first covering version in creation order counts. None where no version covers it.
    """
    covers: dict[int, tuple[list[int], list[int]]] = {}
    for offsets, created in sorted(versions, key=lambda v: v[1]):
        for part, next_offset in offsets.items():
            marks, times = covers.setdefault(int(part), ([], []))
            # A running maximum, so that bisect finds the first version (in time) past the offset.
            marks.append(max(int(next_offset), marks[-1] if marks else -1))
            times.append(int(created))
    out: list[int | None] = []
    for part, offset, ts in samples:
        entry = covers.get(int(part))
        if entry is None:
            out.append(None)
            continue
        marks, times = entry
        i = bisect.bisect_right(marks, offset)  # first index whose mark > offset
        out.append(times[i] - ts if i < len(marks) else None)
    return out


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


def read_samples(settings: Settings, ends: dict[int, int]) -> list[tuple[int, int, int, int]]:
    """(partition, offset, impression_ts_ms, record timestamp ms) of every samples-topic record up to `ends`."""
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
                    out.append((rec.partition, rec.offset, sample.impression_ts_ms, rec.timestamp))
        return out
    finally:
        consumer.close()


def _versions(settings: Settings, model: str) -> list[tuple[dict[str, int], int]]:
    from streamrank.registry.store import Registry

    registry = Registry(settings.registry_root(), model)
    out = []
    for v in registry.list_versions():
        info = registry.info(v)
        out.append((info.meta.get("offsets", {}), info.created_ms))
    return out


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def freshness_run(settings: Settings, model: str, rate: float, warmup_s: float, duration_s: float,
                  drain_s: float, seed: int = 0, progress: bool = True) -> dict:
    """One run: worker + trainer as processes, live traffic, then every measured sample's freshness."""
    from streamrank.events.producer import produce_events
    from streamrank.pipeline import end_offsets, start_trainer, start_worker, stop_worker
    from streamrank.registry.store import Registry
    from streamrank.topics import ensure_topics
    from streamrank.train.online import trainer_dir

    ensure_topics(settings)
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    logs = {"worker": data / "worker.log", "trainer": data / "trainer.log"}
    worker = start_worker(settings, logs["worker"])
    trainer = start_trainer(settings, model, logs["trainer"])
    registry = Registry(settings.registry_root(), model)

    def check() -> None:
        for name, proc in (("worker", worker), ("trainer", trainer)):
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
        if registry.latest_version() is None:
            return False
        at_start.update(trainer_status())  # the guardrail's count when the measured interval begins
        return True

    window_s = settings.attribution_window_ms / 1000
    traffic = LiveTraffic(rate, warmup_s, duration_s, tail_s=window_s + 3.0, click_delay_s=0.75 * window_s,
                          ready=ready, check=check, seed=seed)
    try:
        report = produce_events(settings, traffic, progress=False, strict=True)
        if progress:
            print(f"  produced {report.sent:,} events ({report.rate:,.0f}/s); measuring "
                  f"{duration_s:.0f}s from {traffic.measure_start_ms}", flush=True)
        time.sleep(settings.batch_within_s + 1.0)  # the worker's last batch reaches the samples topic
        ends = end_offsets(settings, settings.topic("samples"))
        rows = [r for r in read_samples(settings, ends)
                if traffic.measure_start_ms <= r[2] < traffic.measure_end_ms]
        keys = [(p, o, ts) for p, o, ts, _ in rows]
        deadline = time.monotonic() + drain_s
        while True:
            check()
            fresh = freshness_ms(keys, _versions(settings, model))
            if all(f is not None for f in fresh) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        stop_worker(trainer)
        stop_worker(worker)
    status = trainer_status()
    covered = [(f, r) for f, r in zip(fresh, rows, strict=True) if f is not None]
    values = [f for f, _ in covered]
    to_topic = [r[3] - r[2] for _, r in covered]
    to_version = [f - (r[3] - r[2]) for f, r in covered]
    versions = _versions(settings, model)
    in_window = sorted(c for _, c in versions if traffic.measure_start_ms <= c < traffic.measure_end_ms)
    gaps = [b - a for a, b in itertools.pairwise(in_window)]
    return {
        "events_sent": report.sent, "events_per_s": report.rate, "requests": traffic.requests,
        "clicks": traffic.clicks, "samples": len(rows), "covered": len(values), "not_covered": len(rows) - len(values),
        "samples_per_s": len(rows) / duration_s,
        "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
        "max_ms": float(max(values)) if values else float("nan"),
        "mean_ms": float(statistics.mean(values)) if values else float("nan"),
        "to_topic_p50_ms": percentile(to_topic, 50), "to_topic_p95_ms": percentile(to_topic, 95),
        "to_version_p50_ms": percentile(to_version, 50), "to_version_p95_ms": percentile(to_version, 95),
        "versions": sum(c >= traffic.measure_start_ms for _, c in versions), "versions_total": len(versions),
        "version_gap_median_ms": statistics.median(gaps) if gaps else float("nan"),
        "blocked": status.get("blocked", 0) - at_start.get("blocked", 0), "blocked_total": status.get("blocked"),
        "prequential_auc": status.get("metrics", {}).get("prequential_auc"),
        "samples_learned": status.get("metrics", {}).get("samples_learned"),
    }


def freshness_settings(broker: str, data_dir: Path, run: int, guardrail_margin: float | None = None) -> Settings:
    """The latency-tuned settings of a freshness run (shared by the worker and the trainer via env vars)."""
    overrides: dict[str, Any] = {
        "bootstrap_servers": broker, "topic_prefix": f"fresh{run}.", "worker_id": f"fresh-worker-{run}",
        "data_dir": str(data_dir), "batch_within_s": 0.2, "attribution_window_ms": 2000,
        "train_batch_within_s": 0.5, "checkpoint_every_s": 2.0, "publish_every_s": 2.0,
        "min_samples_to_publish": 200, "registry_keep": 100_000,  # every version stays, to be looked up
    }
    if guardrail_margin is not None:
        overrides["guardrail_margin"] = guardrail_margin
    return load_settings(**overrides)


SETTING_NAMES = ("attribution_window_ms", "batch_within_s", "batch_size", "train_batch_size", "train_batch_within_s",
                 "checkpoint_every_s", "checkpoint_every_steps", "publish_every_s", "min_samples_to_publish",
                 "guardrail_margin", "partitions")


def run_freshness(model: str = "din", runs: int = 3, rate: float = 800.0, warmup_s: float = 30.0,
                  duration_s: float = 60.0, drain_s: float = 30.0, guardrail_margin: float | None = None,
                  progress: bool = True) -> dict:
    """All freshness runs on one embedded broker (a fresh topic prefix and data dir each)."""
    from streamrank.broker import EmbeddedBroker

    rows: list[dict] = []
    settings: Settings | None = None
    with TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        for i in range(runs):
            settings = freshness_settings(broker.bootstrap_servers, Path(tmp) / f"run{i}", i, guardrail_margin)
            row = {"run": i + 1, **freshness_run(settings, model, rate, warmup_s, duration_s, drain_s, seed=i,
                                                 progress=progress)}
            rows.append(row)
            if progress:
                print(f"run {i + 1}/{runs}: freshness p50 {row['p50_ms']:,.0f} ms, p95 {row['p95_ms']:,.0f} ms, "
                      f"max {row['max_ms']:,.0f} ms over {row['covered']:,} samples "
                      f"({row['not_covered']} not covered); {row['versions']} versions, {row['blocked']} blocked",
                      flush=True)
    assert settings is not None
    keys = ("p50_ms", "p95_ms", "max_ms", "to_topic_p50_ms", "to_version_p50_ms", "events_per_s", "samples_per_s")
    return {
        "model": model, "runs": rows, "rate": rate, "warmup_s": warmup_s, "duration_s": duration_s,
        "settings": {k: getattr(settings, k) for k in SETTING_NAMES},
        "median": {k: statistics.median(r[k] for r in rows) for k in keys},
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
    }


def write_freshness(result: dict, command: str, out_dir: Path = DOCS) -> Path:
    """Writes freshness.md and .json into out_dir; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "freshness.json").write_text(json.dumps({**result, "command": command}, indent=1) + "\n")
    s, med, m = result["settings"], result["median"], result["machine"]
    window = s["attribution_window_ms"]
    lines = [
        "# Freshness: from an event to the first published version trained on it",
        "",
        f"Command: `{command}`  ",
        f"Embedded broker (tansu), `streamrank worker` and `streamrank train --model {result['model']}` as child "
        f"processes on CPU, {m['cpus']} CPUs shared by all of them and the producer; Python {m['python']}, "
        f"torch {m['torch']}, {result['date']}.",
        "",
        f"Traffic: a live synthetic request stream at {result['rate']:,.0f} events/s (3 impressions per request, at "
        f"most one click, 0.1-{0.75 * window / 1000:.1f} s later; clicks depend on the item's category and the "
        f"user's favourite ones, see `LiveTraffic`), event time = produce time. After a warm-up (at least "
        f"{result['warmup_s']:.0f} s and until the first version is out), the "
        f"samples whose impressions fall in the next {result['duration_s']:.0f} s are measured: freshness = "
        "creation time of the first registry version whose offsets cover the sample minus the impression's time.",
        "",
        "| run | events/s | samples | p50 | p95 | max | not covered | impression -> samples topic (p50) "
        "| samples topic -> version (p50) | versions published (blocked) since the warm-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['run']} | {r['events_per_s']:,.0f} | {r['samples']:,} | {r['p50_ms'] / 1000:.2f} s | "
            f"{r['p95_ms'] / 1000:.2f} s | {r['max_ms'] / 1000:.2f} s | {r['not_covered']:,} | "
            f"{r['to_topic_p50_ms'] / 1000:.2f} s | {r['to_version_p50_ms'] / 1000:.2f} s | "
            f"{r['versions']} ({r['blocked']}) |")
    lines.append(
        f"| **median** | {med['events_per_s']:,.0f} | | **{med['p50_ms'] / 1000:.2f} s** | "
        f"**{med['p95_ms'] / 1000:.2f} s** | {med['max_ms'] / 1000:.2f} s | | {med['to_topic_p50_ms'] / 1000:.2f} s | "
        f"{med['to_version_p50_ms'] / 1000:.2f} s | |")
    lines += [
        "",
        "Where the time goes (the floor, from the settings below):",
        "",
        f"- attribution window, {window / 1000:.1f} s: a sample exists only once its impression's window has "
        "closed, and a window closes when a later event of the same partition passes impression time + window "
        "(at this rate, a few ms later);",
        f"- the worker's micro-batch, up to {s['batch_within_s']} s, then its send to the samples topic. "
        "Together with the window this is the *impression -> samples topic* column (the samples' record "
        "timestamps, set by the worker's producer);",
        f"- the trainer's micro-batch, up to {s['train_batch_within_s']} s (or {s['train_batch_size']} samples), "
        "and its learn() step;",
        f"- the checkpoint and publication interval, {s['checkpoint_every_s']} s / {s['publish_every_s']} s: a "
        "version is published at a checkpoint, so a learned sample waits on average about half the interval, "
        "plus writing the checkpoint and the version (fsync). These two are the *samples topic -> version* column.",
        "",
        "Versions blocked by the guardrail (prequential AUC over the samples since the last publication more than "
        f"{s['guardrail_margin']} below the live version's) are not published; their samples count from the next "
        "published version, so each block adds a publication interval to them. \"Not covered\": measured "
        "samples that no version had consumed by the end of the run.",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in s.items()],
        "",
    ]
    path = out_dir / "freshness.md"
    path.write_text("\n".join(lines))
    return path


