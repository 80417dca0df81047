"""The one settings object for every streamrank service.

Values come from, in increasing priority: the defaults below, a TOML file (`STREAMRANK_CONFIG` or
`--config`), and environment variables named `STREAMRANK_<FIELD>` (upper case). Durations are in
milliseconds unless the name says otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
LABEL_POLICIES = ("window", "fake_negative")
FAKE_NEGATIVE_MODES = ("fnw", "fnc", "none", "window")


class ConfigError(ValueError):
    """A setting has a value streamrank cannot use."""


@dataclass(frozen=True)
class Settings:
    """Every tunable of the system, with production-sane defaults."""

    # --- Kafka ------------------------------------------------------------------------------------
    # Empty: the CLI starts the embedded broker on loopback and fills this in.
    bootstrap_servers: str = ""
    topic_prefix: str = "streamrank."
    partitions: int = 8
    # --- storage ----------------------------------------------------------------------------------
    data_dir: str = "var"
    # --- event validation -------------------------------------------------------------------------
    max_event_bytes: int = 16_384
    max_id_length: int = 256
    # Events further than this into the future (vs the wall clock) are rejected.
    max_future_skew_ms: int = DAY_MS
    # --- stream worker ----------------------------------------------------------------------------
    worker_id: str = "streamrank-worker"
    batch_size: int = 20_000
    batch_within_s: float = 0.5
    # Longest behaviour sequence kept per user (all types together, newest kept).
    max_sequence_length: int = 100
    # How long behaviours of each type stay in the sequence (event time, relative to the user's newest event).
    click_retention_ms: int = 7 * DAY_MS
    add_to_cart_retention_ms: int = 30 * DAY_MS
    purchase_retention_ms: int = 365 * DAY_MS
    # Two interactions of one user co-occur when in one session or less than this apart (MicRec: 1 hour).
    cooc_window_ms: int = HOUR_MS
    # How many of the user's latest interactions a new one is paired with.
    cooc_lookback: int = 50
    # Co-occurrence neighbours kept per item (top by count); trimmed once the map exceeds 2x this.
    cooc_top_m: int = 100
    # Clicks/purchases within this long after an impression label it.
    attribution_window_ms: int = HOUR_MS
    # How the worker emits samples (docs/delayed-feedback.md): "window", one sample per impression when its
    # window closes; "fake_negative", a negative at impression time, the impression again as a positive when
    # it is clicked (or carted, bought), and the final labels at the window's close (for evaluation).
    label_policy: str = "window"
    # Scenario statistics: the recent window and its bucket width.
    stats_window_ms: int = DAY_MS
    stats_bucket_ms: int = HOUR_MS
    # Buckets stay this long past the window, so a partition that lags the others still lands its counts.
    stats_grace_ms: int = 7 * DAY_MS
    # Item counters in samples (docs/design.md, "Deterministic item counters"): counts per bucket of effective
    # event time; a sample counts the events before the start of its impression's bucket (0 to this stale).
    counter_bucket_ms: int = 60_000
    # A partition caught up and without records for this long (wall time) stops holding the counters' frontier.
    counter_idle_ms: int = 2_000
    # Duplicate event ids are recognised for this long (event time) after the first copy.
    dedupe_horizon_ms: int = DAY_MS
    # Behaviours written into samples and user snapshots (newest kept).
    feature_sequence_length: int = 50
    # A compacted changelog of each partition's state (stream/changelog.py): a partition that moves to another
    # worker is restored from it instead of replayed from the events topic (False: replay).
    changelog: bool = True
    # Users kept decoded in memory between batches.
    user_cache_size: int = 200_000
    # --- online trainer and registry ---------------------------------------------------------------
    # Where versions are published (empty: <data_dir>/registry).
    registry_dir: str = ""
    # Versions kept besides the live one (older ones are pruned after each publication).
    registry_keep: int = 5
    # A file of HMAC keys, one per line (the first signs, all verify): when set, versions are signed at publication
    # and unsigned or wrongly signed versions are refused at read (docs/security.md)
    registry_signing_key_file: str = ""
    train_batch_size: int = 1024
    train_batch_within_s: float = 1.0
    train_lr: float = 3e-3
    train_weight_decay: float = 1e-2
    # Embedding tables: row-wise "adagrad" (one accumulator per row) or "adam" (lazy Adam, per-row moments
    # and steps), with their own learning rate (0: train_lr); only the rows a batch touches are updated
    # (streamrank/train/optim.py). Chosen on measurements: docs/online-training.md, "The optimizer".
    train_row_optimizer: str = "adagrad"
    train_row_lr: float = 0.4
    # Remedies for one pass over a correlated stream (streamrank/train/replay.py): each fresh micro-batch is
    # learned `train_passes` times, then followed by a step on `train_replay_ratio` x its size samples
    # drawn from the newest `train_replay_buffer` learned ones (0: no replay). Defaults chosen on
    # measurements: docs/online-training.md, "Online against batch".
    train_passes: int = 1
    # Samples wait in a shuffle pool of this many after their prediction and are learned in random order
    # (streamrank/train/shuffle_pool.py; 0: learned in arrival order at once). The pool is learned out before
    # every checkpoint, so versions and offsets are unaffected. Off by default: a pool of 5,000 gained 0.011
    # AUC on the first 250k ML-1M ratings and lost 0.015 on the full stream (docs/online-training.md).
    train_shuffle_pool: int = 0
    train_replay_buffer: int = 100_000
    train_replay_ratio: float = 2.0
    # The replayed samples join the fresh micro-batch's step (one step on both) instead of a step of their own:
    # each step then mixes the few users of a fresh batch with the buffer's many (docs/online-training.md).
    train_replay_mixed: bool = False
    # Replay spends spare capacity only: while more than this many samples wait on the samples topic beyond
    # the micro-batch being learned, the trainer learns fresh batches without replay steps, so a trainer
    # behind the stream catches up at its no-replay speed (-1: replay regardless, as an offline protocol
    # over a backlog wants).
    train_replay_max_lag: int = 4096
    # Seconds between the progress lines the worker and the trainer write to their log (0: none).
    progress_every_s: float = 30.0
    # Threads torch uses in `streamrank train` (0: torch's default, one per core). On a machine the trainer
    # shares with the worker and the broker, fewer threads than cores avoid oversubscription.
    train_torch_threads: int = 0
    # A private checkpoint (weights, optimizer, offsets) every this many steps or seconds, whichever first;
    # Kafka offsets are committed only after the checkpoint that covers them.
    checkpoint_every_steps: int = 200
    checkpoint_every_s: float = 10.0
    # A registry version at most this often (at a checkpoint), once the window holds enough samples.
    publish_every_s: float = 30.0
    min_samples_to_publish: int = 2_000
    # Prequential (test-then-train) metrics over the last this many samples.
    prequential_window: int = 20_000
    # A version whose prequential AUC is more than this below the live version's is not published.
    guardrail_margin: float = 0.02
    # ... and only when the evidence says so: at least this many positives and negatives in its window, and
    # the shortfall significant at this level (one-sided z-test; registry/guardrail.py). Less publishes.
    guardrail_min_per_class: int = 50
    guardrail_alpha: float = 0.05
    # Ids unseen for this long (event time) leave the vocabularies; checked this often (event time).
    vocab_ttl_ms: int = 30 * DAY_MS
    vocab_expire_every_ms: int = DAY_MS
    # Scenarios that get a branch of their own in multi-scenario models (SAML, MMoE), comma-separated, as
    # events carry them (the MovieLens producer writes "age:<bucket>"); every other scenario is served by
    # the shared "other" branch. Changing it needs a fresh model (the branches are fixed at creation).
    train_scenarios: str = ""
    # How the trainer learns from a fake_negative stream: "fnw" (fake negative weighted, importance weights
    # 1 + p on positives and (1 - p)(1 + p) on negatives), "fnc" (fake negative calibrated: plain log loss,
    # scores p = b / (1 - b)) or "none" (the biased labels as they come); Ktena et al., RecSys 2019.
    # "window" makes a trainer learn only the window-closed emissions of such a stream (today's behaviour).
    train_fake_negative: str = "fnw"
    # Predictions waiting for their final labels (fake_negative: scored when the window closes), at most.
    prequential_pending: int = 500_000
    # When set, the trainer appends every prediction it makes before learning (sample id, impression time,
    # label, probability) to this TSV file, for offline analysis of the prequential run.
    prediction_log: str = ""
    # --- scorer -------------------------------------------------------------------------------------
    # Prometheus /metrics of the worker and of the trainer on metrics_host (0: off; one port per process).
    worker_metrics_port: int = 0
    train_metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # --- Kafka security (every client: worker, trainer, producer, scorer, simulator) -----------------------
    # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; SASL mechanism PLAIN or SCRAM-SHA-256/512; a CA file (PEM)
    # for SSL. The password may also come from STREAMRANK_KAFKA_SASL_PASSWORD. docs/security.md.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    serve_host: str = "127.0.0.1"
    serve_port: int = 50051
    # TLS of the gRPC port and the metrics endpoint (PEM files; empty: plaintext). With a client CA, clients
    # must present a certificate it signed (mutual TLS). Clients of the scorer (pipeline, simulator) trust
    # serve_tls_ca_file and connect with TLS when it is set. docs/security.md.
    serve_tls_cert_file: str = ""
    serve_tls_key_file: str = ""
    serve_tls_client_ca_file: str = ""
    serve_tls_ca_file: str = ""
    # Prometheus metrics over HTTP on serve_host (0: no metrics endpoint).
    serve_metrics_port: int = 9464
    # Ranking models served (registry names, comma-separated); the first is the default of Rank.
    serve_models: str = "aw_moe_cl"
    # Registry name of the retrieval model + index pair Retrieve uses (empty: Retrieve is unavailable).
    serve_retrieval: str = "retrieval"
    # How often the registry is checked for new versions.
    serve_poll_s: float = 1.0
    # Ranking versions kept loaded besides CURRENT and the labelled ones: current | latest:N | specific:V1,V2
    # (docs/serving.md, "Versions"). A request may name a loaded version or a label.
    serve_version_policy: str = "current"
    # Threads running model forwards (torch uses serve_torch_threads inside each); 0 runs them on the
    # asyncio loop itself (one call at a time, no thread hop).
    serve_workers: int = 2
    serve_torch_threads: int = 1
    # Cross-request batching of Rank forwards (docs/serving.md): a call waits at most this long for others to
    # share its forward (0: off; a lone call never waits), up to this many candidates per forward.
    serve_batch_wait_ms: float = 0.0
    serve_batch_max_candidates: int = 4_000
    # Calls accepted at once and request bytes held by them (more get RESOURCE_EXHAUSTED, before decoding;
    # together they bound the scorer's memory, docs/serving.md), and the longest a call may take.
    serve_max_inflight: int = 64
    serve_max_inflight_bytes: int = 32 * 1024 * 1024
    serve_timeout_s: float = 2.0
    # Request limits (INVALID_ARGUMENT beyond them).
    serve_max_candidates: int = 1_000
    serve_max_k: int = 1_000
    serve_max_behaviors: int = 1_000
    serve_max_query_chars: int = 1_024
    # Seconds in-flight calls get to finish on shutdown.
    serve_grace_s: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------
    @property
    def scenario_list(self) -> tuple[str, ...]:
        """`train_scenarios` as a tuple of names (empty entries dropped)."""
        return tuple(s.strip() for s in self.train_scenarios.split(",") if s.strip())

    def topic(self, name: str) -> str:
        """Full topic name for a logical one (events, items, samples, user-features, cooc, events.dlq...)."""
        return f"{self.topic_prefix}{name}"

    @functools.cached_property
    def retention_by_type(self) -> dict[int, int]:
        """Retention per behaviour event type, keyed by EventType value (computed once)."""
        from streamrank.v1 import events_pb2

        return {
            events_pb2.CLICK: self.click_retention_ms,
            events_pb2.ADD_TO_CART: self.add_to_cart_retention_ms,
            events_pb2.PURCHASE: self.purchase_retention_ms,
        }

    @property
    def shortest_retention_ms(self) -> int:
        """The retention of the type kept for the shortest time."""
        return min(self.click_retention_ms, self.add_to_cart_retention_ms, self.purchase_retention_ms)

    def registry_root(self) -> Path:
        """The registry directory (registry_dir, or <data_dir>/registry)."""
        return Path(self.registry_dir) if self.registry_dir else Path(self.data_dir) / "registry"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated)."""
        updated = dataclasses.replace(self, **changes)
        updated.validate()
        return updated

    def validate(self) -> None:
        """Raises ConfigError naming the first setting that is out of range."""
        positive = [
            "partitions", "max_event_bytes", "max_id_length", "batch_size", "max_sequence_length",
            "cooc_window_ms", "cooc_lookback", "cooc_top_m", "attribution_window_ms",
            "stats_window_ms", "stats_bucket_ms", "counter_bucket_ms", "counter_idle_ms", "dedupe_horizon_ms",
            "feature_sequence_length",
            "user_cache_size", "click_retention_ms", "add_to_cart_retention_ms", "purchase_retention_ms",
            "max_future_skew_ms", "train_batch_size", "checkpoint_every_steps", "prequential_window",
            "vocab_ttl_ms", "vocab_expire_every_ms", "train_lr", "checkpoint_every_s",
            "train_batch_within_s", "train_passes", "prequential_pending",
            "serve_poll_s", "serve_torch_threads", "serve_max_inflight", "serve_max_inflight_bytes",
            "serve_batch_max_candidates",
            "serve_timeout_s", "serve_max_candidates", "serve_max_k", "serve_max_behaviors",
            "serve_max_query_chars",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("registry_keep", "min_samples_to_publish", "guardrail_margin", "publish_every_s",
                     "progress_every_s", "train_replay_buffer", "train_shuffle_pool", "train_replay_ratio",
                     "guardrail_min_per_class", "train_torch_threads",
                     "serve_port", "serve_metrics_port", "serve_grace_s", "serve_workers", "serve_batch_wait_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.label_policy not in LABEL_POLICIES:
            raise ConfigError(f"label_policy must be one of {', '.join(LABEL_POLICIES)}, got {self.label_policy!r}")
        if self.train_fake_negative not in FAKE_NEGATIVE_MODES:
            raise ConfigError(f"train_fake_negative must be one of {', '.join(FAKE_NEGATIVE_MODES)}, "
                              f"got {self.train_fake_negative!r}")
        if self.train_row_optimizer not in ("adam", "adagrad"):
            raise ConfigError(f"train_row_optimizer must be adam or adagrad, got {self.train_row_optimizer!r}")
        if not 0 < self.guardrail_alpha < 1:
            raise ConfigError(f"guardrail_alpha must be in (0, 1), got {self.guardrail_alpha!r}")
        if self.train_replay_max_lag < -1:
            raise ConfigError("train_replay_max_lag must be >= -1 (-1: always replay), "
                              f"got {self.train_replay_max_lag!r}")
        if self.train_row_lr < 0:
            raise ConfigError(f"train_row_lr must be >= 0, got {self.train_row_lr!r}")
        if self.stats_grace_ms < 0:
            raise ConfigError(f"stats_grace_ms must be >= 0, got {self.stats_grace_ms!r}")
        if self.batch_within_s <= 0:
            raise ConfigError(f"batch_within_s must be > 0, got {self.batch_within_s!r}")
        if self.stats_window_ms % self.stats_bucket_ms:
            raise ConfigError("stats_window_ms must be a multiple of stats_bucket_ms")
        if self.feature_sequence_length > self.max_sequence_length:
            raise ConfigError("feature_sequence_length cannot exceed max_sequence_length")


# STREAMRANK_* variables that are not settings: the config file's path and the simulator's scorer target.
OTHER_ENV = frozenset({"STREAMRANK_CONFIG", "STREAMRANK_SIMULATOR_SCORER"})


def _coerce(name: str, raw: Any, kind: Any, source: str = "") -> Any:
    where = f" (from {source})" if source else ""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}: expected a boolean, got {raw!r}{where}")
    if kind is int and (isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer())):
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}{where}")
    try:
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: expected {kind.__name__}, got {raw!r}{where}") from exc


def _unknown_env(names: set[str]) -> None:
    """Refuses a misspelt STREAMRANK_* variable (it would be ignored silently), with the closest setting."""
    import difflib

    known = {f"STREAMRANK_{n.upper()}" for n in names} | OTHER_ENV
    for key in sorted(k for k in os.environ if k.startswith("STREAMRANK_") and k not in known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown environment variable {key}{hint}")


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Builds the Settings from defaults, an optional TOML file, STREAMRANK_* env vars and overrides."""
    hints = get_type_hints(Settings)
    values: dict[str, Any] = {}
    config_path = path or os.environ.get("STREAMRANK_CONFIG")
    if config_path:
        file_path = Path(config_path)
        if not file_path.is_file():
            raise ConfigError(f"config file not found: {file_path}")
        try:
            with file_path.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file_path} is not valid TOML: {exc}") from exc
        known = {f.name for f in fields(Settings)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown settings in {file_path}: {', '.join(unknown)}")
        values.update(data)
        sources = dict.fromkeys(data, str(file_path))
    else:
        sources = {}
    _unknown_env({f.name for f in fields(Settings) if f.name != "extra"})
    for f in fields(Settings):
        env = os.environ.get(f"STREAMRANK_{f.name.upper()}")
        if env is not None and f.name != "extra":
            values[f.name] = env
            sources[f.name] = f"STREAMRANK_{f.name.upper()}"
    unknown_overrides = sorted(set(overrides) - set(hints))
    if unknown_overrides:
        raise ConfigError(f"unknown settings: {', '.join(unknown_overrides)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    sources.update({k: "the command line" for k, v in overrides.items() if v is not None})
    typed = {
        name: (raw if name == "extra" else _coerce(name, raw, hints[name], sources.get(name, "")))
        for name, raw in values.items()
    }
    settings = Settings(**typed)
    settings.validate()
    return settings
