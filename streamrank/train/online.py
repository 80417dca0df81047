"""`streamrank train`: learns from the samples topic in micro-batches and publishes versions.

Per micro-batch (size or time, whichever first; read with librdkafka, which fetches ahead: `train.feed`):
decode -> score (prequential) -> learn. Every
`checkpoint_every_steps` steps or `checkpoint_every_s` seconds: the private checkpoint (weights, optimizer,
vocabularies, window, the next offset of every partition) is written atomically, and only then are the
offsets committed to Kafka. On start the consumer is positioned from the checkpoint, so a kill -9 replays
exactly the samples after the last checkpoint into the state of that checkpoint: nothing is skipped and
nothing is learned twice. At a checkpoint, at most every `publish_every_s` and once at least
`min_samples_to_publish` samples were scored since the last publication, the model is offered to the
publisher (the registry, which applies the guardrail) with its prequential AUC over exactly those samples.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from streamrank.config import Settings
from streamrank.models.factory import Ranker
from streamrank.models.ranking.artifact import model_files
from streamrank.observability import ProgressLog, Series, serve_metrics
from streamrank.train.checkpoint import load_checkpoint, save_checkpoint
from streamrank.train.feed import SampleFeed
from streamrank.train.learner import OnlineLearner
from streamrank.v1 import features_pb2

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 1.0  # how often the learned offsets are committed between checkpoints (informational)

# Offered a version's files and metadata; returns whether it was published.
Publisher = Callable[[dict[str, bytes], dict[str, Any]], bool]


def trainer_dir(settings: Settings, model: str) -> Path:
    """Where a model's trainer keeps its checkpoint and status file."""
    return Path(settings.data_dir) / "trainer" / model


class OnlineTrainer:
    """Consumes TrainingSamples for one model; resumable from its checkpoint."""

    def __init__(self, settings: Settings, preset: str, publisher: Publisher | None = None,
                 warm_start: Ranker | None = None, name: str | None = None) -> None:
        self.settings = settings
        self.preset = preset
        # The registry name, trainer directory and consumer group (default: the preset); two trainers of one
        # preset with other settings (a label policy, a learning rate) run side by side under two names.
        self.name = name or preset
        self.publisher = publisher
        self.dir = trainer_dir(settings, self.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.dir / "checkpoint.pt"
        state = load_checkpoint(self.checkpoint_path)
        if state is not None:
            self.learner = OnlineLearner.from_state(settings, state)
            self.offsets: dict[int, int] = dict(state["offsets"])
            log.info("resuming %s from its checkpoint: %d samples learned, offsets %s",
                     preset, self.learner.learned, self.offsets)
        else:
            self.learner = OnlineLearner(settings, preset, model=warm_start)
            self.offsets = {}
        self.undecodable = 0
        self.published: list[int] = []
        self.blocked = 0
        self.checkpoints = 0
        self._last_checkpoint = time.monotonic()
        self._last_commit = time.monotonic()
        self.lag = 0  # samples on the topic not learned yet, after the last micro-batch
        self._metrics_server: Any = None
        self._steps_at_checkpoint = self.learner.steps
        self._last_publish = 0.0
        self._seen_at_publish = self.learner.window.seen
        self._learned_at_publish = self.learner.learned
        self.stop_event = threading.Event()
        self.progress = ProgressLog(log, settings.progress_every_s, base=self._progress_counters())

    # -- the loop -----------------------------------------------------------------------------------
    def run(self, max_samples: int | None = None, idle_exit_s: float | None = None) -> dict[str, Any]:
        """Trains until stopped (stop_event / SIGTERM), idle for idle_exit_s, or max_samples learned."""
        s = self.settings
        feed = SampleFeed(s, f"trainer-{self.name}", self.offsets)
        if s.train_metrics_port and self._metrics_server is None:
            port, self._metrics_server = serve_metrics(self.metric_series, s.metrics_host, s.train_metrics_port)
            log.info("trainer metrics on %s:%d/metrics", s.metrics_host, port)
        try:
            idle_since = time.monotonic()
            while not self.stop_event.is_set():
                records = feed.next_batch(timeout_s=s.train_batch_within_s)
                if not records:
                    self.learner.drain()  # the stream paused: nothing to shuffle with, learn what waits
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    self._maybe_checkpoint(feed)
                    self.progress.maybe(self._progress_counters(), self._progress_line)
                    continue
                idle_since = time.monotonic()
                waiting = feed.lag(self.offsets) - len(records)  # beyond this micro-batch
                self.learner.replay_paused = 0 <= s.train_replay_max_lag < waiting
                self._learn(records)
                self.lag = feed.lag(self.offsets)
                if time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
                    feed.commit(self.offsets, asynchronous=True)  # the training lag others read (simulator.lag)
                    self._last_commit = time.monotonic()
                self._maybe_checkpoint(feed)
                self.progress.maybe(self._progress_counters(), self._progress_line)
                if max_samples is not None and self.learner.learned >= max_samples:
                    break
            self.checkpoint(feed)
        finally:
            feed.close()
            if self._metrics_server is not None:
                self._metrics_server.shutdown()
                self._metrics_server.server_close()
                self._metrics_server = None
        return self.status()

    def _learn(self, records: list[Any]) -> None:
        samples = []
        for rec in records:
            sample = features_pb2.TrainingSample()
            try:
                sample.ParseFromString(rec.value)
            except (DecodeError, TypeError):
                self.undecodable += 1
                continue
            samples.append(sample)
        if samples:
            report = self.learner.learn(samples)
            if self.settings.prediction_log and report.predictions is not None:
                self._log_predictions(report.predictions)
        for rec in records:
            self.offsets[rec.partition] = rec.offset + 1

    def _log_predictions(self, predictions: tuple[list[str], list[int], Any, Any]) -> None:
        ids, stamps, labels, probs = predictions
        with open(self.settings.prediction_log, "a") as fh:
            rows = zip(ids, stamps, labels, probs, strict=True)
            fh.writelines(f"{i}\t{t}\t{int(y)}\t{p:.6f}\n" for i, t, y, p in rows)

    # -- checkpoint and publication -----------------------------------------------------------------
    def _maybe_checkpoint(self, feed: SampleFeed) -> None:
        s = self.settings
        due_steps = self.learner.steps - self._steps_at_checkpoint >= s.checkpoint_every_steps
        due_time = time.monotonic() - self._last_checkpoint >= s.checkpoint_every_s
        if (due_steps or due_time) and (self.learner.steps > self._steps_at_checkpoint or len(self.learner.pool)):
            self.checkpoint(feed)

    def checkpoint(self, feed: SampleFeed | None = None) -> None:
        """Learns what the shuffle pool holds, writes the checkpoint, then commits the offsets it covers, then
        maybe publishes: so a checkpoint and a version cover exactly the samples learned."""
        self.learner.drain()
        self.learner.window.record(wall_s=time.time())
        state = {**self.learner.state(), "offsets": dict(self.offsets)}
        save_checkpoint(self.checkpoint_path, state)
        self.learner.mark_good()
        self.checkpoints += 1
        self._last_checkpoint = time.monotonic()
        self._steps_at_checkpoint = self.learner.steps
        if feed is not None and self.offsets:
            feed.commit(self.offsets)  # informational only: positions come from the checkpoint
        self._maybe_publish()
        self.write_status()

    def _maybe_publish(self) -> None:
        s = self.settings
        if self.publisher is None or time.monotonic() - self._last_publish < s.publish_every_s:
            return
        # Offered once enough was learned since the last publication; judged on what it predicted since then
        # only (a window that still holds older, better predictions would let a regression through and let the
        # bar creep down). Under fake_negative a prediction is scored only when its window closes, so the
        # scored samples may be few or none: too little evidence publishes (registry.guardrail).
        if self.learner.learned - self._learned_at_publish < min(s.min_samples_to_publish, s.prequential_window):
            return
        if not self.learner.weights_finite():
            log.error("weights are not finite: nothing published")
            return
        fresh = min(self.learner.window.seen - self._seen_at_publish, self.learner.window.filled)
        self._last_publish = time.monotonic()
        self._seen_at_publish = self.learner.window.seen
        self._learned_at_publish = self.learner.learned
        recent = self.learner.window.metrics(last=fresh)
        calibration = {"calibration": "fnc"} if self._fnc_scores() else {}
        positives = round(recent["positive_rate"] * recent["window"]) if recent["window"] else 0
        metrics = {**self.learner.metrics(), "prequential_auc": recent["auc"], "prequential_logloss": recent["logloss"],
                   "prequential_samples": recent["window"], "prequential_positives": float(positives),
                   "prequential_negatives": float(recent["window"] - positives)}
        meta = {
            "preset": self.preset, "metrics": metrics, "offsets": dict(self.offsets),
            "samples_learned": self.learner.learned, "steps": self.learner.steps,
            "trained_through_ms": self.learner.trained_through_ms, **calibration,
        }
        if self.publisher(model_files(self.learner.model, self.preset), meta):
            self.published.append(self.learner.steps)
        else:
            self.blocked += 1

    def _fnc_scores(self) -> bool:
        """Whether this version's scores must be calibrated by FNC at serving (learned fake negatives by plain
        log loss under `train_fake_negative = "fnc"`)."""
        return self.settings.train_fake_negative == "fnc" and self.learner.fake_negative_learned > 0

    def _progress_counters(self) -> dict[str, float]:
        learner = self.learner
        return {"learned": learner.learned, "batches": learner.steps + learner.non_finite_batches,
                "paused": learner.replay_paused_batches}

    def _progress_line(self, counters: Mapping[str, float], rates: Mapping[str, float]) -> str:
        """The steady progress line: samples learned and their rate, lag, recent AUC, versions, replay."""
        auc = self.learner.window.metrics().get("auc", float("nan"))
        paused = rates["paused"] / rates["batches"] if rates["batches"] else 0.0
        return (f"trainer {self.name}: {int(counters['learned']):,} samples learned ({rates['learned']:,.0f}/s), "
                f"lag {self.lag:,}, prequential AUC {auc:.4f}, versions published {len(self.published)}, "
                f"blocked {self.blocked}, replay paused in {paused:.0%} of batches")

    def status(self) -> dict[str, Any]:
        """Counters, offsets and window metrics (also written to status.json)."""
        return {
            "model": self.name, "preset": self.preset, "pid": os.getpid(),
            "offsets": {str(k): v for k, v in self.offsets.items()},
            "metrics": self.learner.metrics(), "learned_hash": self.learner.learned_hash,
            "undecodable": self.undecodable, "checkpoints": self.checkpoints,
            "publications": len(self.published), "blocked": self.blocked,
            "curve": self.learner.window.curve[-500:],
        }

    def metric_series(self) -> list[Series]:
        """The trainer's Prometheus series (read at scrape time; `streamrank.observability`)."""
        m, model = self.learner.metrics(), {"model": self.name}
        labels = ("model",)

        def one(name: str, help_: str, kind: str, value: float) -> Series:
            return Series(name, help_, kind, [(model, value)], labels)

        return [
            one("streamrank_trainer_samples_learned_total", "Fresh samples learned", "counter", m["samples_learned"]),
            one("streamrank_trainer_samples_replayed_total", "Replayed samples stepped on", "counter", m["replayed"]),
            one("streamrank_trainer_steps_total", "Optimizer steps", "counter", m["steps"]),
            one("streamrank_trainer_prequential_auc", "AUC of predictions made before learning (window)", "gauge",
                m["prequential_auc"]),
            one("streamrank_trainer_versions_published_total", "Versions published", "counter", len(self.published)),
            one("streamrank_trainer_versions_blocked_total", "Versions refused by the guardrail", "counter",
                self.blocked),
            one("streamrank_trainer_lag_samples", "Samples on the topic not learned yet", "gauge", self.lag),
            one("streamrank_trainer_undecodable_total", "Samples that could not be decoded", "counter",
                self.undecodable),
        ]

    def write_status(self) -> None:
        """Atomically replaces status.json."""
        path = self.dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), allow_nan=True))
        os.replace(tmp, path)
