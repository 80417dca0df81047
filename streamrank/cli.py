"""The `streamrank` command: broker, worker, produce, train, registry, serve, train-retrieval, index, state, demo,
simulate and bench."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from streamrank.broker import check_reachable
from streamrank.cli_retrieval import add_retrieval_parsers
from streamrank.config import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        getattr(args, "config", None),
        bootstrap_servers=getattr(args, "bootstrap_servers", None),
        data_dir=getattr(args, "data_dir", None),
        worker_id=getattr(args, "worker_id", None),
    )


def cmd_broker(args: argparse.Namespace) -> int:
    """Runs the embedded broker in the foreground until Ctrl-C."""
    import signal

    from streamrank.broker import EmbeddedBroker

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops it like Ctrl-C: the context manager takes tansu down

    signal.signal(signal.SIGTERM, interrupt)
    with EmbeddedBroker(port=args.port) as broker:
        print(f"embedded broker listening on {broker.bootstrap_servers} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping broker", flush=True)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Runs the stream worker (Faust) until SIGTERM/Ctrl-C, on the embedded broker if none is configured."""
    from streamrank.broker import broker_for
    from streamrank.stream.app import Worker
    from streamrank.topics import ensure_topics

    settings = _settings(args)
    if args.metrics_port is not None:
        settings = settings.with_overrides(worker_metrics_port=args.metrics_port)
    replica = None
    if args.state_slots:
        from streamrank.stream.slots import claim_slot

        slot = claim_slot(Path(settings.data_dir))  # held until this process exits
        replica = f"slot-{slot.number}"
        settings = settings.with_overrides(data_dir=str(slot.path))
        if args.slot_file:
            Path(args.slot_file).write_text(f"{slot.path}\n")
        log.info("state slot %s: %s", slot.number, slot.path)
    if settings.bootstrap_servers:
        check_reachable(settings.bootstrap_servers)
    with broker_for(settings.bootstrap_servers) as bootstrap:
        settings = settings.with_overrides(bootstrap_servers=bootstrap)
        ensure_topics(settings)
        log.info("worker %s on %s, state in %s", settings.worker_id, bootstrap, settings.data_dir)
        Worker(settings, replica=replica).run(loglevel=args.loglevel)
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    """Publishes items and events from MovieLens or an event-log file."""
    from streamrank.events.producer import open_source, produce_events, produce_items
    from streamrank.topics import ensure_topics

    settings = _settings(args)
    if not settings.bootstrap_servers:
        print("produce needs --bootstrap-servers (or STREAMRANK_BOOTSTRAP_SERVERS): an embedded broker "
              "started just for it would vanish with its topics when it exits", file=sys.stderr)
        return 2
    spec = args.dataset or args.source
    if not spec or (args.dataset and args.source):
        print("produce takes one source: movielens:ml-100k | movielens:ml-1m | an event-log path "
              "(positional or --dataset)", file=sys.stderr)
        return 2
    if spec in ("ml-100k", "ml-1m"):
        spec = f"movielens:{spec}"
    check_reachable(settings.bootstrap_servers)
    ensure_topics(settings)
    try:
        source = open_source(spec, items_path=args.items, fmt=args.format, negatives=args.negatives,
                             seed=args.seed, scenario_field=args.scenario_field, limit=args.limit,
                             as_is=args.as_is, sampling=args.negative_sampling, pool=args.negative_pool,
                             order=args.order)
    except (ValueError, OSError) as exc:
        print(f"produce: {exc}", file=sys.stderr)
        return 2
    if source.items is not None:
        print(produce_items(settings, source.items, progress=not args.quiet).summary())
    report = produce_events(settings, source.events, rate=args.rate, progress=not args.quiet,
                            strict=args.strict)
    print(report.summary())
    return 0 if not report.failed else 1


def cmd_train(args: argparse.Namespace) -> int:
    """Runs the online trainer for one model until SIGTERM/Ctrl-C (or --idle-exit / --max-samples)."""
    import signal

    from streamrank.models.factory import PRESETS, is_scenario_preset
    from streamrank.registry.publisher import RegistryPublisher
    from streamrank.registry.store import open_registry
    from streamrank.runtime import tune_allocator
    from streamrank.train.checkpoint import CheckpointError
    from streamrank.train.online import OnlineTrainer

    settings = _settings(args)
    if args.scenarios is not None:
        settings = settings.with_overrides(train_scenarios=args.scenarios)
    if args.metrics_port is not None:
        settings = settings.with_overrides(train_metrics_port=args.metrics_port)
    tune_allocator()
    if settings.train_torch_threads:
        import torch

        torch.set_num_threads(settings.train_torch_threads)
    if args.model not in PRESETS:
        print(f"unknown model {args.model!r}; presets: {', '.join(sorted(PRESETS))}", file=sys.stderr)
        return 2
    if not settings.bootstrap_servers:
        print("train needs --bootstrap-servers (or STREAMRANK_BOOTSTRAP_SERVERS)", file=sys.stderr)
        return 2
    check_reachable(settings.bootstrap_servers)
    warm = None
    if args.warm_start:
        from pathlib import Path

        from streamrank.models.ranking.artifact import model_from_files, read_model_dir

        if Path(args.warm_start).is_dir():
            files = read_model_dir(args.warm_start)
        else:
            model_name, _, version = args.warm_start.partition(":")
            _, files = open_registry(settings, model_name).read(int(version) if version else None)
        warm, _ = model_from_files(files)
    name = args.name or args.model
    publisher = RegistryPublisher(settings, name)
    try:
        trainer = OnlineTrainer(settings, args.model, publisher=publisher, warm_start=warm, name=name)
    except CheckpointError as exc:
        publisher.close()
        print(f"train: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: trainer.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: trainer.stop_event.set())
    if is_scenario_preset(args.model):
        branches = trainer.learner.model.spec.branch_names()
        print(f"scenario branches: {', '.join(branches)} (unlisted scenarios go to 'other')", flush=True)
        if tuple(branches[1:]) != settings.scenario_list:
            print(f"note: the model's branches come from its checkpoint or warm start, not from train_scenarios="
                  f"{settings.train_scenarios!r} (branches are fixed when a model is created)", flush=True)
    print(f"training {args.model} as {name} from {settings.topic('samples')}; registry {settings.registry_root()}",
          flush=True)
    try:
        status = trainer.run(max_samples=args.max_samples, idle_exit_s=args.idle_exit)
    finally:
        publisher.close()
    m = status["metrics"]
    print(f"stopped: {int(m['samples_learned']):,} samples learned, prequential AUC {m['prequential_auc']:.4f}, "
          f"{status['publications']} versions published, {status['blocked']} blocked by the guardrail")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    """Lists a model's versions, shows one, labels one, or rolls back to an older one."""
    from streamrank.registry.publisher import RegistryPublisher, announcement
    from streamrank.registry.store import RegistryError, open_registry

    settings = _settings(args)
    try:
        registry = open_registry(settings, args.model)
        if args.action == "list":
            if not registry.list_versions():
                print(f"{args.model}: no versions in {settings.registry_root()}", file=sys.stderr)
                return 1
            live, labels = registry.current_version(), registry.labels()
            for v in registry.list_versions():
                info = registry.info(v)
                auc = info.meta.get("metrics", {}).get("prequential_auc", float("nan"))
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created_ms / 1000))
                samples = info.meta.get("samples_learned", 0)
                mark = "*" if v == live else " "
                tags = ",".join(label for label, lv in sorted(labels.items()) if lv == v)
                print(f"{mark} v{v:<6} {created}  AUC {auc:.4f}  samples {samples:>10,}  {info.checksum[:12]}"
                      + (f"  [{tags}]" if tags else ""))
        elif args.action == "show":
            info = registry.info(args.version or registry.current_version() or 0)
            registry.verify(info)
            print(json.dumps({"version": info.version, "checksum": info.checksum, "path": str(info.path),
                              "files": info.files, "meta": info.meta}, indent=1, default=str))
        elif args.action == "label":
            if not args.label:
                print("registry label needs --label NAME (and --version N, or no --version to remove it)",
                      file=sys.stderr)
                return 2
            registry.set_label(args.label, args.version)
            print(f"{args.model}: {args.label} -> " + (f"v{args.version}" if args.version else "removed"))
        else:
            info = registry.rollback(args.version)
            print(f"{args.model}: v{info.version} is live again")
            if settings.bootstrap_servers:
                publisher = RegistryPublisher(settings, args.model)
                publisher.send(announcement(info, rollback=True))
                publisher.close()
    except RegistryError as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    """Prints a summary of a stopped worker's state (users, sequences, co-occurrence, scenarios)."""
    from streamrank.stream.summary import print_summary

    settings = _settings(args)
    return print_summary(settings)


def cmd_demo(args: argparse.Namespace) -> int:
    """The end-to-end job: every service on the embedded broker and an A/B replay (streamrank/demo.py)."""
    from streamrank.demo import DemoPlan, run_demo

    plan = DemoPlan(dataset=args.dataset, items=args.items, data_dir=args.data_dir, report_dir=args.report_dir or
                    f"{args.data_dir}/report", exclude_seen=args.exclude_seen, pace_to_trainers=args.pace_to_trainers,
                    **{k: v for k, v in (("warm_ratings", args.warm), ("replay_ratings", args.replay)) if v})
    try:
        from streamrank.data.dataset import load_dataset

        data = load_dataset(plan.dataset, plan.items)  # refuse a missing or unreadable log before anything starts
    except (ValueError, OSError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    return run_demo(plan, data=data)


BENCHMARKS = {
    "stream": "streamrank.bench.stream",      # worker throughput vs the raw consumer ceiling
    "stream-scaling": "streamrank.bench.stream_scaling",  # 1..N workers: events/s, CPU-s, hand-off, samples
    "ranking": "streamrank.bench.ranking",    # the AW-MoE family on MovieLens
    "online": "streamrank.bench.online",      # online learning over a replay vs an offline model
    "online-vs-batch": "streamrank.bench.online_vs_batch",  # online vs scheduled retrains, slice by slice
    "online-decomposition": "streamrank.bench.online_decomposition",  # the online/offline gap, cause by cause
    "train": "streamrank.bench.train",        # trainer samples/s per model; freshness
    "keepup": "streamrank.bench.keepup",      # the trainer's lag behind the worker on the ML-1M stream
    "retrieval": "streamrank.bench.retrieval",  # two-tower models and MicRec CL on MovieLens (HIT@K)
    "index": "streamrank.bench.index",        # FAISS index kinds: build time, latency, recall vs exact
    "serve": "streamrank.bench.serve",        # the gRPC scorer under load vs the bare forward
    "scenario": "streamrank.bench.scenario",  # SAML and the multi-scenario baselines on MovieLens
    "scenario-cost": "streamrank.bench.scenario_cost",  # one Rank request per multi-scenario model (ms)
}


def cmd_serve(args: argparse.Namespace) -> int:
    """Runs the gRPC scorer until SIGTERM/Ctrl-C (graceful: in-flight calls finish)."""
    import asyncio

    from streamrank.serve.server import serve_forever
    from streamrank.topics import ensure_topics

    settings = _settings(args)
    changes = {k: v for k, v in (("serve_port", args.port), ("serve_host", args.host),
                                 ("serve_models", args.models), ("serve_retrieval", args.retrieval),
                                 ("serve_metrics_port", args.metrics_port)) if v is not None}
    settings = settings.with_overrides(**changes)
    if not settings.bootstrap_servers:
        print("serve needs --bootstrap-servers (or STREAMRANK_BOOTSTRAP_SERVERS) to replicate features from",
              file=sys.stderr)
        return 2
    check_reachable(settings.bootstrap_servers)
    ensure_topics(settings)
    from streamrank.registry.store import open_registry
    from streamrank.serve.servicer import served_models
    from streamrank.serve.tls import TLSConfigError, server_credentials

    for name in served_models(settings) + ([settings.serve_retrieval] if settings.serve_retrieval else []):
        if open_registry(settings, name).current_version() is None:
            print(f"warning: {name} has no published version in {settings.registry_root()} (a misspelt --models "
                  "entry?); the scorer says NOT_SERVING until one is published", file=sys.stderr)

    from streamrank.serve.versions import VersionPolicy

    try:
        server_credentials(settings)  # a bad TLS setting is one line here, not a traceback from the server
        VersionPolicy.parse(settings.serve_version_policy)
    except (TLSConfigError, ValueError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve_forever(settings))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """The simulator: log replay or synthetic online A/B against a scorer (`streamrank simulate --help`)."""
    from simulator.cli import main as simulator_main

    return int(simulator_main(args.rest) or 0)


def cmd_bench(args: argparse.Namespace) -> int:
    """Runs one benchmark; its options follow the name (`streamrank bench train --help`)."""
    import importlib

    return int(importlib.import_module(BENCHMARKS[args.what]).main(args.rest) or 0)


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("streamrank")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="streamrank", description=__doc__)
    parser.add_argument("--version", action="version", version=f"streamrank {_version()}")
    parser.add_argument("--config", help="TOML settings file (see streamrank/config.py)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, embedded: bool = False) -> None:
        p.add_argument("--bootstrap-servers", help="Kafka bootstrap servers, or STREAMRANK_BOOTSTRAP_SERVERS" +
                       (" (default: an embedded broker started for it)" if embedded else " (required)"))
        p.add_argument("--data-dir", help="where state is kept (default: ./var)")

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker on loopback")
    p.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (default 9092)")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("worker", help="run the stream worker")
    common(p, embedded=True)
    p.add_argument("--worker-id", help="consumer group / state folder name")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (setting worker_metrics_port; 0 = off)")
    p.add_argument("--loglevel", default="warning", help="Faust's log level (default warning)")
    p.add_argument("--state-slots", action="store_true",
                   help="keep state in the lowest free slot folder under the data dir (replicas sharing a volume: "
                        "a recreated replica finds its state again; stream/slots.py)")
    p.add_argument("--slot-file", help="with --state-slots: write the claimed slot's folder to this file")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("produce", help="publish events from MovieLens or an event-log file")
    common(p)
    p.add_argument("source", nargs="?", help="movielens:ml-100k | movielens:ml-1m | path to .jsonl/.csv[.gz] events")
    p.add_argument("--dataset", help="the same as the positional source (ml-100k, ml-1m or a path)")
    p.add_argument("--items", help="catalog file (.jsonl/.csv) to publish first")
    p.add_argument("--format", choices=["jsonl", "csv"], help="events file format (default: by extension)")
    p.add_argument("--negatives", type=int, default=1,
                   help="sampled negatives shown with each interaction of an interaction-only log (MovieLens, orders)")
    p.add_argument("--negative-sampling", default="popularity", choices=["popularity", "uniform"],
                   help="negatives drawn in proportion to interactions, or uniformly (default popularity)")
    p.add_argument("--negative-pool", default="log", choices=["log", "catalog", "past"],
                   help="negatives from the items of the whole log, the catalog, or the log so far")
    p.add_argument("--order", default="sort", choices=["sort", "refuse"],
                   help="an event log not in time order: sort it (with a warning) or refuse it")
    p.add_argument("--as-is", action="store_true",
                   help="publish a file's events unchanged (no order check, no request stream)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled negatives")
    p.add_argument("--scenario-field", default="auto",
                   help="auto (MovieLens: age; event log: its own scenario), a MovieLens user field, or none")
    p.add_argument("--limit", type=int, help="stop after this many interactions (a log with impressions: its events "
                   "before the N-th interaction; --as-is: N events)")
    p.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    p.add_argument("--strict", action="store_true", help="stop at the first invalid event")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("train", help="run the online trainer of one model")
    common(p)
    p.add_argument("--model", default="aw_moe_cl", help="preset: dnn, din, category_moe, aw_moe, aw_moe_cl, "
                   "... or a multi-scenario one: saml, bst, mmoe, wide_deep, deepfm, dcn, saml_no_gate, ...")
    p.add_argument("--scenarios", help="multi-scenario models: comma-separated scenarios with a branch of their "
                   "own, as events name them (e.g. age:18,age:25); others share one (setting train_scenarios)")
    p.add_argument("--warm-start", help="MODEL[:VERSION] from the registry, or a directory written by "
                   "streamrank.models.ranking.artifact.write_model_dir (an offline model), to start from")
    p.add_argument("--name", help="registry name, checkpoint folder and consumer group (default: the preset), so "
                   "that two trainers of one preset with other settings can run side by side")
    p.add_argument("--max-samples", type=int, help="stop after learning this many samples")
    p.add_argument("--idle-exit", type=float, help="stop after this many seconds without samples")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (setting train_metrics_port; 0 = off)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("registry", help="list, show, label or roll back model versions")
    common(p)
    p.add_argument("action", choices=["list", "show", "rollback", "label"], help="what to do")
    p.add_argument("--model", default="aw_moe_cl", help="registry name (default aw_moe_cl)")
    p.add_argument("--version", type=int, help="for show/rollback/label (rollback default: the previous version; "
                   "label without --version removes the label)")
    p.add_argument("--label", help="for label: the label to point at --version (e.g. stable, canary)")
    p.set_defaults(func=cmd_registry)

    p = sub.add_parser("serve", help="run the gRPC scorer (Rank, Retrieve)")
    common(p)
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gRPC port (default 50051; 0 = any free port)")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (default 9464; 0 = off)")
    p.add_argument("--models", help="ranking models to serve, comma-separated; the first is the default")
    p.add_argument("--retrieval", help="registry name of the retrieval model + index (empty: no Retrieve)")
    p.set_defaults(func=cmd_serve)

    add_retrieval_parsers(sub, common)

    p = sub.add_parser("state", help="summarise a stopped worker's state")
    common(p)
    p.add_argument("--worker-id", help="the worker whose state to summarise (default: settings.worker_id)")
    p.set_defaults(func=cmd_state)

    p = sub.add_parser("demo", help="run the pipeline end to end on the embedded broker")
    p.add_argument("--dataset", default="ml-100k", help="ml-100k | ml-1m | path to your event log "
                   "(docs/your-own-data.md)")
    p.add_argument("--items", help="the event log's catalog file (.jsonl/.csv)")
    p.add_argument("--warm", type=int, help="interactions published as the warm-up stream (default 80000; a "
                   "smaller log: 80%%)")
    p.add_argument("--replay", type=int, help="interactions replayed as the A/B after the warm-up (default 20000; "
                   "a smaller log: the other 20%%)")
    p.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                   help="Retrieve leaves out items the user already has (default: on for MovieLens, off for a "
                        "log, where repeat purchases are real)")
    p.add_argument("--pace-to-trainers", type=int, metavar="SAMPLES",
                   help="hold the replay while a trainer is more than SAMPLES behind (arms compared at equal "
                        "training)")
    p.add_argument("--data-dir", default="var/demo", help="state, logs and the report (default var/demo)")
    p.add_argument("--report-dir", help="where the A/B report goes (default: <data-dir>/report)")
    p.set_defaults(func=cmd_demo)

    # add_help=False: `--help` goes on to the simulator's (or the benchmark's) own parser, which knows the options
    p = sub.add_parser("simulate", help="replay a log or run a synthetic online A/B through the scorer",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="online | replay | ab-check, and their options")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("bench", help="run a benchmark and write its table to docs/benchmarks/")
    p.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark")
    p.set_defaults(func=cmd_bench)
    for name, subparser in sub.choices.items():
        if name not in ("simulate", "bench"):  # their options pass through to them
            # after the subcommand as well as before it (SUPPRESS: an absent one keeps the top-level value)
            subparser.add_argument("--config", default=argparse.SUPPRESS, help="TOML settings file")
            subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                   help="debug logging, tracebacks")
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    """The errors an ordinary mistake raises (a setting, a file, a log row, a registry, a broker): the CLI
    prints their message in one line instead of a traceback."""
    from kafka.errors import KafkaError

    from streamrank.broker import BrokerError
    from streamrank.events.producer import ProduceError
    from streamrank.registry.store import RegistryError

    return (ConfigError, RegistryError, ProduceError, BrokerError, KafkaError, OSError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `streamrank` console script.

    One error boundary: a known error (`_known_errors`) prints `error: <message>` on one line and exits 2;
    `-v` shows the traceback instead.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and getattr(args, "command", None) in ("simulate", "bench"):
        args.rest = [*unknown, *args.rest]  # `simulate --help`: options for the simulator's own parser
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "faust", "mode", "kafka", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kafka-python's "Task ... ran for 0.25s ... blocking the event loop" warnings (a third of a scorer's log):
    # its own I/O loop timing itself, with nothing for an operator to do
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except _known_errors() as exc:
        if args.verbose:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
