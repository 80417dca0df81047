"""`python -m simulator` (and `streamrank simulate`): online synthetic A/B, log replay, the A/B evidence check.

    python -m simulator online --arms control=random treatment=oracle --requests 20000 --out var/sim/ab
    python -m simulator online --arms control=popularity model=model:aw_moe_cl --scorer 127.0.0.1:50051 \\
        --publish --bootstrap-servers 127.0.0.1:9092 --rate 200 --out var/sim/online
    python -m simulator replay movielens:ml-100k --arms a=random b=popularity --shadow --limit 20000
    python -m simulator ab-check --seeds 20
    python -m simulator shoplog --out var/shop          # a small synthetic orders log (docs/your-own-data.md)

Kafka settings (bootstrap servers, topic prefix...) come from the usual streamrank settings (`--config`,
STREAMRANK_* variables); the scorer target from `--scorer` or STREAMRANK_SIMULATOR_SCORER.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from simulator.arms import Arm, parse_arm

DEFAULT_SCORER = "127.0.0.1:50051"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arms", nargs="+", required=True, type=parse_arm, metavar="NAME=RANKER",
                   help="arms: NAME=random|popularity|oracle[:weight] or NAME=model:MODEL[@VERSION][:weight]")
    p.add_argument("--control", help="arm the others are compared with (default: the first)")
    p.add_argument("--salt", default="streamrank-ab", help="assignment salt (change it to re-randomise users)")
    p.add_argument("--scorer", default=os.environ.get("STREAMRANK_SIMULATOR_SCORER", DEFAULT_SCORER),
                   help="gRPC target of the scorer (dns:///scorer:50051 for several replicas)")
    p.add_argument("--wait-scorer", type=float, default=60.0, help="seconds to wait for the scorer to be SERVING")
    p.add_argument("--tls-ca", default="", help="connect to the scorer with TLS, trusting this CA (PEM)")
    p.add_argument("--tls-cert", default="", help="client certificate (PEM) for a scorer that requires one")
    p.add_argument("--tls-key", default="", help="the client certificate's key (PEM)")
    p.add_argument("--publish", action="store_true", help="send the events (and catalog) to Kafka")
    p.add_argument("--config", help="streamrank TOML settings (Kafka, topic prefix)")
    p.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (default: STREAMRANK_BOOTSTRAP_SERVERS)")
    p.add_argument("--concurrency", type=int, default=16, help="requests whose scorer calls run together")
    p.add_argument("--rate", type=float, help="requests per wall-clock second (default: as fast as possible)")
    p.add_argument("--out", default="var/simulator/report", help="report folder (report.md/.html/.json + PNGs)")
    p.add_argument("--bootstrap", type=int, default=1000, dest="n_boot", help="bootstrap replicates")
    p.add_argument("--permutations", type=int, default=1000, help="permutations of the p-values")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="streamrank simulator")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("online", help="online A/B in the synthetic environment")
    _common(p)
    p.add_argument("--requests", type=int, default=20_000, help="requests to simulate (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic world and its users")
    p.add_argument("--users", type=int, help="number of users (default 2000)")
    p.add_argument("--items", type=int, help="catalog size (default 2000)")
    p.add_argument("--hit-k", type=int, default=5, help="K of HIT@K: a click in the top K (default 5)")
    p.add_argument("--id-prefix", default="", help="request id prefix (default sim<seed>)")
    p.add_argument("--drift-period", type=float, default=0.0, metavar="SECONDS",
                   help="drifting preferences: every user's interest moves to a new mix of categories every "
                        "SECONDS of event time, linearly in between (requests are ~0.5 s of event time apart; "
                        "default 0 = no drift)")
    p = sub.add_parser("replay", help="replay an event log through the scorer and the arms")
    _common(p)
    p.add_argument("source", nargs="?", help="movielens:ml-100k | movielens:ml-1m | path to a .jsonl/.csv event log")
    p.add_argument("--dataset", help="the same as the positional source (ml-100k, ml-1m or a path)")
    p.add_argument("--items-file", "--items", dest="items_file",
                   help="catalog (.jsonl/.csv) of an event log (candidates, attributes)")
    p.add_argument("--order", default="sort", choices=["sort", "refuse"],
                   help="an event log not in time order: sort it (with a warning) or refuse it")
    p.add_argument("--skip", type=int, default=0, help="skip the first N interactions (the warm-up already published)")
    p.add_argument("--request-prefix", default="replay",
                   help="request-id prefix (give each replay into the same topics its own)")
    p.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                   help="Retrieve leaves out the user's items (default: on for MovieLens, off for an event log, "
                        "where repeat purchases are real)")
    p.add_argument("--progress-every", type=int, default=1000, help="a progress line every N interactions (0 = off)")
    p.add_argument("--lag-every", type=int, default=500,
                   help="with --publish: read each model arm's training lag every N requests")
    p.add_argument("--pace-to-trainers", type=int, metavar="SAMPLES",
                   help="with --publish: hold the replay while a model arm's trainer is more than SAMPLES behind")
    p.add_argument("--candidates", choices=["sampled", "retrieve"], default="sampled",
                   help="the logged item plus sampled items, or the scorer's Retrieve (default sampled)")
    p.add_argument("--retrieve-k", type=int, default=100, help="candidates Retrieve returns (default 100)")
    p.add_argument("--negatives", type=int, default=99, help="sampled candidates besides the logged item (default 99)")
    p.add_argument("--slate", type=int, default=10, help="impressions published per request")
    p.add_argument("--feedback", choices=["slate", "sampled"], default="slate",
                   help="impressions published: the arm's own top --slate (as production would; its unclicked "
                        "items are negatives the log never had), or the logged item among random catalog items, "
                        "the same for every arm (unbiased labels for trainers that keep up; docs/simulator.md)")
    p.add_argument("--shadow", action="store_true", help="every arm ranks every request (paired comparison)")
    p.add_argument("--limit", type=int, help="replay only the first N interactions")
    p.add_argument("--speedup", type=float, help="event-time ms per wall ms (e.g. 3600: an hour per second)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    p = sub.add_parser("shoplog", help="write a small synthetic shop's orders log and catalog (CSV)")
    p.add_argument("--out", default="var/shop", help="folder for orders.csv and items.csv")
    p.add_argument("--orders", type=int, default=3000, help="orders in the log (default 3000)")
    p.add_argument("--users", type=int, default=300, help="shop users (default 300)")
    p.add_argument("--items", type=int, default=240, help="catalog size (default 240)")
    p.add_argument("--click-rate", type=float, default=0.0,
                   help="share of orders preceded by a click on another item (browsing)")
    p.add_argument("--grouped-by-user", action="store_true", help="write the events grouped by user, not by time")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    p = sub.add_parser("ab-check", help="the many-seed oracle/popularity/A-A evidence (simulator.ab_check)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of simulator.ab_check (--help for them)")
    return parser


def _settings(args: argparse.Namespace) -> Any:
    from streamrank.config import load_settings

    settings = load_settings(args.config, bootstrap_servers=args.bootstrap_servers)
    if args.publish and not settings.bootstrap_servers:
        raise SystemExit("--publish needs --bootstrap-servers or STREAMRANK_BOOTSTRAP_SERVERS")
    return settings


def _client(args: argparse.Namespace, arms: Sequence[Arm], needed: bool) -> Any:
    if not needed:
        return None
    from simulator.client import ScorerClient

    client = ScorerClient(args.scorer, max_inflight=max(args.concurrency * 2, 8), tls_ca_file=args.tls_ca,
                          tls_cert_file=args.tls_cert, tls_key_file=args.tls_key)
    if args.wait_scorer > 0:
        client.wait_ready(args.wait_scorer)
    return client


def drift_period_ms(seconds: float) -> int:
    """`--drift-period` (event-time seconds, 0 = off) as the environment's `drift_period_ms`."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"--drift-period must be a number of seconds >= 0 (0 = no drift), got {seconds}")
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def cmd_online(args: argparse.Namespace) -> int:
    """Runs the synthetic online A/B and writes its report."""
    from simulator.catalog import CatalogParams
    from simulator.environment import Environment, EnvParams
    from simulator.online import run_online
    from simulator.publish import KafkaSink
    from simulator.report import online_report

    params = EnvParams(seed=args.seed, id_prefix=args.id_prefix, drift_period_ms=drift_period_ms(args.drift_period))
    if args.users:
        params = replace(params, n_users=args.users)
    if args.items:
        params = replace(params, catalog=replace(CatalogParams(), n_items=args.items))
    client = _client(args, args.arms, any(a.uses_scorer for a in args.arms))
    sink = KafkaSink(_settings(args)) if args.publish else None
    try:
        result = run_online(Environment(params), args.arms, args.requests, salt=args.salt, client=client, sink=sink,
                            concurrency=args.concurrency, hit_k=args.hit_k, rate=args.rate, progress_every=5000)
    finally:
        if sink is not None:
            sink.close()
        if client is not None:
            client.close()
    title = "Online A/B (synthetic environment)"
    if params.drift_period_ms:
        title += f", preferences drifting every {params.drift_period_ms / 1000:g} s of event time"
    path = online_report(result, args.out, args.control, args.n_boot, args.permutations, args.seed, title=title)
    result.save(path.parent / "requests.json")
    print(f"report: {path}")
    return 0


def _catalog(data: Any) -> tuple[list[str], dict[str, Any]]:
    """Candidate universe and item attributes of a log (its catalog file's, or the items its events name)."""
    from streamrank.v1 import events_pb2

    attrs = {i: events_pb2.ItemAttributes(category=it.main_category, brand=it.brand, price=it.price)
             for i, it in data.items.items()}
    return sorted(data.items), attrs


def _lag_probe(settings: Any, arms: Sequence[Arm]) -> Any:
    """A training-lag probe for the model arms (None when no arm is served by a named model)."""
    from simulator.lag import TrainerLag

    models = {a.name: a.model for a in arms if a.model}
    return TrainerLag(settings, models) if models else None


def cmd_replay(args: argparse.Namespace) -> int:
    """Replays a log through the arms and writes its report."""
    from simulator.publish import KafkaSink
    from simulator.replay import run_replay
    from simulator.replay_log import log_interactions
    from simulator.report import replay_report

    args.source = args.dataset or args.source
    if not args.source:
        raise ValueError("replay needs a log: movielens:ml-100k, movielens:ml-1m or an event-log path")
    if args.skip < 0 or args.progress_every < 0 or args.lag_every < 1:
        raise ValueError("--skip and --progress-every must be >= 0, --lag-every >= 1")
    if args.pace_to_trainers is not None and not args.publish:
        raise ValueError("--pace-to-trainers needs --publish (the trainers learn from the replay's events)")
    from streamrank.data.dataset import is_path, load_dataset

    data = load_dataset(args.source, args.items_file if is_path(args.source) else None, order=args.order)
    logged = log_interactions(data, skip=args.skip, limit=args.limit)
    catalog, attributes = _catalog(data)
    exclude_seen = args.exclude_seen if args.exclude_seen is not None else data.source == "movielens"
    needs_scorer = args.candidates == "retrieve" or any(a.uses_scorer for a in args.arms)
    client = _client(args, args.arms, needs_scorer)
    settings = _settings(args)
    sink = KafkaSink(settings) if args.publish else None
    lag = _lag_probe(settings, args.arms) if args.publish else None
    try:
        result = run_replay(logged, args.arms, client=client, sink=sink, salt=args.salt,
                            candidates=args.candidates, catalog=catalog, attributes=attributes,
                            retrieve_k=args.retrieve_k, exclude_seen=exclude_seen, negatives=args.negatives,
                            slate_size=args.slate, feedback=args.feedback, shadow=args.shadow,
                            concurrency=args.concurrency,
                            speedup=args.speedup, rate=args.rate, seed=args.seed, request_prefix=args.request_prefix,
                            lag_probe=lag.lags if lag is not None else None, lag_every=args.lag_every,
                            pace_to_trainers=args.pace_to_trainers,
                            progress=lambda line: print(line, file=sys.stderr, flush=True),
                            progress_every=args.progress_every)
    finally:
        for closable in (sink, client, lag):
            if closable is not None:
                closable.close()
    path = replay_report(result, args.out, args.control, args.n_boot, args.permutations, args.seed)
    print(f"report: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m simulator` / `streamrank simulate`; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("kafka", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "ab-check":
        from simulator.ab_check import main as ab_main

        return ab_main(args.rest)
    if args.command == "shoplog":
        from simulator.shoplog import ShopParams, write_shop_log

        if min(args.orders, args.users, args.items) < 1 or not 0 <= args.click_rate <= 1:
            print("error: --orders, --users, --items must be >= 1 and --click-rate in [0, 1]", file=sys.stderr)
            return 2
        params = ShopParams(users=args.users, items=args.items, orders=args.orders, click_rate=args.click_rate,
                            seed=args.seed)
        events, items = write_shop_log(args.out, params, grouped_by_user=args.grouped_by_user)
        print(f"wrote {events} and {items}")
        return 0
    from simulator.client import ScorerError

    try:
        return cmd_online(args) if args.command == "online" else cmd_replay(args)
    except (ValueError, OSError, ScorerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
