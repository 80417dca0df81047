"""The README's main job: every service on the embedded broker, and an A/B of AW-MoE & CL against DIN.

1. The embedded broker, a stream worker, and one online trainer per ranking arm start as processes.
2. Warm-up: the catalog and the request stream of the log's first interactions (MovieLens ratings, or a
   user's own event log: `--dataset PATH --items PATH`) are published; the worker
   turns them into samples and the trainers publish their first versions. Meanwhile a two-tower model is
   trained offline on the same prefix and its FAISS index over the catalog is published (Retrieve).
3. The scorer starts (`streamrank serve`), and the simulator replays the remaining ratings as the
   production service: per logged interaction, Retrieve, then Rank by the user's arm; the slate's
   impressions and the logged interaction go back to Kafka, so the models keep learning and the scorer
   swaps their new versions in during the replay.
4. The A/B report (HIT@K, NDCG@K, session AUC per arm with bootstrap CIs and p-values, by scenario and
   long-tail users, plots of the metrics and of the versions served) is written; everything stops.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from streamrank.broker import broker_for, free_port
from streamrank.config import Settings, load_settings
from streamrank.data.dataset import InteractionLog, dataset_label, load_dataset
from streamrank.data.requests import catalog_items, log_events
from streamrank.events.producer import produce_events, produce_items
from streamrank.index.refresh import build_retrieval, describe, publish_retrieval
from streamrank.pipeline import (
    end_offsets,
    start_scorer,
    start_trainer,
    start_worker,
    stop_worker,
    wait_caught_up,
)
from streamrank.registry.store import open_registry
from streamrank.topics import ensure_topics
from streamrank.train.retrieval_serving import train_servable


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs; the defaults are the README's `make demo` (under 15 minutes on 2 cores)."""

    dataset: str = "ml-100k"  # or the path of an event log (docs/your-own-data.md)
    items: str | None = None  # the event log's catalog file
    warm_ratings: int = 80_000  # interactions; a smaller log is split 80/20 (see `split_counts`)
    replay_ratings: int = 20_000
    exclude_seen: bool | None = None  # Retrieve leaves out what the user already has: None = on for MovieLens
    pace_to_trainers: int | None = None  # hold the replay while a trainer is more samples than this behind
    treatment: str = "aw_moe_cl"
    control: str = "din"
    retrieval_preset: str = "youtube_dnn"
    retrieval_epochs: int = 2
    retrieve_k: int = 100
    data_dir: str = "var/demo"
    report_dir: str = "var/demo/report"
    publish_every_s: float = 15.0
    min_samples_to_publish: int = 2_000
    train_batch_size: int = 256
    guardrail_margin: float = 0.02
    topic_prefix: str = "streamrank."
    seed: int = 0
    # What the replay teaches the trainers: "sampled" (the logged item among random catalog items, the same for
    # both arms) or "slate" (the arm's own top 10, whose unclicked items the log never had; simulator.replay)
    feedback: str = "sampled"


def say(message: str) -> None:
    """Progress output of the demo."""
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _settings(plan: DemoPlan, bootstrap: str) -> Settings:
    return load_settings(
        bootstrap_servers=bootstrap, data_dir=plan.data_dir, train_batch_size=plan.train_batch_size,
        checkpoint_every_s=10.0, publish_every_s=plan.publish_every_s,
        min_samples_to_publish=plan.min_samples_to_publish, guardrail_margin=plan.guardrail_margin,
        topic_prefix=plan.topic_prefix, serve_port=free_port(), serve_metrics_port=free_port(),
        serve_models=f"{plan.treatment},{plan.control}", serve_retrieval="retrieval", serve_poll_s=1.0,
        train_torch_threads=1)  # two trainers beside the worker and the scorer: one torch thread each


def _wait_for_versions(settings: Settings, models: list[str], procs: list[Any], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        live = {m: open_registry(settings, m).current_version() for m in models}
        if all(v is not None for v in live.values()):
            say(f"first versions published: {live}")
            return
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a trainer exited with code {proc.returncode} (logs in {settings.data_dir})")
        time.sleep(2)
    raise TimeoutError(f"no version of {models} within {timeout_s}s")


def split_counts(plan: DemoPlan, interactions: int) -> tuple[int, int]:
    """(warm-up, replay) interaction counts: the plan's, cut to what the log has (a warm-up as long as the
    log becomes its first 80%)."""
    warm = plan.warm_ratings if plan.warm_ratings < interactions else int(interactions * 0.8)
    return warm, min(plan.replay_ratings, interactions - warm)


def _retrieval(settings: Settings, plan: DemoPlan, data: InteractionLog, catalog: list) -> None:
    say(f"training the retrieval model ({plan.retrieval_preset}) on the first {plan.warm_ratings:,} interactions")
    trained = train_servable(data, plan.warm_ratings, plan.retrieval_preset, plan.retrieval_epochs, plan.seed)
    best = trained.fit.history[trained.fit.best_epoch] if trained.fit.history else {}
    build = build_retrieval(trained.files, catalog, plan.retrieval_preset, 1)
    info = publish_retrieval(settings, "retrieval", build)
    say(f"retrieval v{info.version} published: {describe(build)}; validation HIT@100 "
        f"{best.get('valid_hit@100', float('nan')):.4f} ({trained.fit.seconds:.0f}s)")


def _replay(settings: Settings, plan: DemoPlan, data: InteractionLog, catalog: list) -> Any:
    from simulator.arms import parse_arm
    from simulator.client import ScorerClient
    from simulator.lag import TrainerLag
    from simulator.publish import KafkaSink
    from simulator.replay import run_replay
    from simulator.replay_log import log_interactions

    arms = [parse_arm(f"treatment=model:{plan.treatment}"), parse_arm(f"control=model:{plan.control}")]
    logged = log_interactions(data, skip=plan.warm_ratings, limit=plan.replay_ratings)
    exclude_seen = data.source == "movielens" if plan.exclude_seen is None else plan.exclude_seen
    sink = KafkaSink(settings)
    lag = TrainerLag(settings, {"treatment": plan.treatment, "control": plan.control})
    try:
        with ScorerClient(f"{settings.serve_host}:{settings.serve_port}") as client:
            result = run_replay(logged, arms, client=client, sink=sink, candidates="retrieve",
                                retrieve_k=plan.retrieve_k, exclude_seen=exclude_seen,
                                catalog=[it.item_id for it in catalog], seed=plan.seed, lag_probe=lag.lags,
                                feedback=plan.feedback,
                                pace_to_trainers=plan.pace_to_trainers,
                                lag_every=max(plan.replay_ratings // 20, 16), progress=lambda line: say("  " + line),
                                progress_every=max(plan.replay_ratings // 10, 1))
    finally:
        lag.close()
        sink.close()
    say(f"replay sent {sink.sent:,} events back to Kafka")
    return result


def headline(report_json: Path) -> list[str]:
    """The lines the demo prints: each arm's replay metrics, and the treatment-vs-control p-values."""
    data = json.loads(report_json.read_text())
    out = []
    for arm in data["summary"]:
        parts = [f"{m} {arm[m]['value']:.4f}" for m in ("HIT@10", "NDCG@10", "session AUC") if m in arm]
        out.append(f"  {arm['arm']:<10} {arm['requests']:>6,} requests  " + "  ".join(parts))
    for c in data["comparisons"]:
        if c["metric"] in ("HIT@10", "NDCG@10", "session AUC"):
            out.append(f"  {c['metric']}: {c['arm_b']} - {c['arm_a']} = {c['diff']:+.4f} "
                       f"({c['relative']:+.1%}), p = {c['p_value']:.4f}")
    return out


def run_demo(plan: DemoPlan | None = None, bootstrap_servers: str = "", data: InteractionLog | None = None) -> int:
    """Runs the whole demo (see the module docstring) on these brokers (default: an embedded one); `data` is
    the plan's log when the caller has loaded it already."""
    plan = plan or DemoPlan()
    base = Path(plan.data_dir)
    if base.exists():
        shutil.rmtree(base)  # the embedded broker starts empty, so the state must too
    base.mkdir(parents=True)
    started = time.monotonic()
    say(f"starting the embedded broker (logs and state in {base})" if not bootstrap_servers
        else f"using the brokers at {bootstrap_servers} (state in {base})")
    procs: list[Any] = []
    with broker_for(bootstrap_servers, base / "broker.log") as bootstrap:
        settings = _settings(plan, bootstrap)
        ensure_topics(settings)
        models = [plan.treatment, plan.control]
        say(f"starting the stream worker and the online trainers ({', '.join(models)})")
        worker = start_worker(settings, log_path=base / "worker.log")
        trainers = [start_trainer(settings, m, log_path=base / f"trainer-{m}.log") for m in models]
        procs = [worker, *trainers]
        try:
            data = data if data is not None else load_dataset(plan.dataset, plan.items)
            warm, replay = split_counts(plan, len(data.ratings))
            plan = replace(plan, warm_ratings=warm, replay_ratings=replay)
            catalog = list(catalog_items(data))
            say(f"publishing the {data.name} catalog and the "
                f"{'events' if data.has_impressions else 'request stream'} of its first {warm:,} of "
                f"{len(data.ratings):,} interactions (warm-up)")
            say("  " + produce_items(settings, catalog, progress=False).summary())
            say("  " + produce_events(settings, log_events(data, limit=warm, seed=plan.seed),
                                      progress=False).summary())
            _retrieval(settings, plan, data, catalog)
            wait_caught_up(settings, end_offsets(settings, settings.topic("events")), proc=worker, progress=True)
            _wait_for_versions(settings, models, trainers)
            say("starting the scorer")
            scorer = start_scorer(settings, log_path=base / "scorer.log")
            procs.append(scorer)
            say(f"scorer SERVING on {settings.serve_host}:{settings.serve_port} (metrics :"
                f"{settings.serve_metrics_port}); replaying {plan.replay_ratings:,} interactions as an A/B: "
                f"treatment = {plan.treatment}, control = {plan.control}")
            result = _replay(settings, plan, data, catalog)
        finally:
            for proc in reversed(procs):
                stop_worker(proc)
        from simulator.report import replay_report

        report = replay_report(result, plan.report_dir, control="control",
                               title=f"A/B replay of {dataset_label(plan.dataset)}: {plan.treatment} vs "
                               f"{plan.control}")
    text = Path(report).read_text().split("\n", 1)
    Path(report).write_text(f"{text[0]}\n\nProduced by `{' '.join(sys.argv) if sys.argv else 'streamrank demo'}` "
                            f"({plan.warm_ratings:,} warm-up interactions, {plan.replay_ratings:,} replayed; retrieval "
                            f"{plan.retrieval_preset}, k={plan.retrieve_k}).\n" + (text[1] if len(text) > 1 else ""))
    versions = {arm: sorted({int(v) for v, a in zip(result.rows["model_version"], result.rows["arm"], strict=True)
                             if a == arm}) for arm in ("treatment", "control")}
    say(f"A/B report: {report} (plots beside it)")
    for line in headline(Path(report).with_suffix(".json")):
        print(line, flush=True)
    say(f"model versions served during the replay: {versions}")
    from simulator.report import training_notes

    for line in training_notes(json.loads(Path(report).with_suffix(".json").read_text())["training"]):
        say("  " + line)
    say(f"done in {time.monotonic() - started:.0f}s")
    return 0
