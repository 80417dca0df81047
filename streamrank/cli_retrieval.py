"""The retrieval subcommands of `streamrank`: train-retrieval (the served two-tower model, on a log) and
index build (that model's FAISS index over a catalog, published for the scorer)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from streamrank.config import Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), bootstrap_servers=getattr(args, "bootstrap_servers", None),
                         data_dir=getattr(args, "data_dir", None))


def cmd_index(args: argparse.Namespace) -> int:
    """Builds the retrieval version (two-tower model + FAISS index over the catalog) and publishes it."""
    from pathlib import Path

    from streamrank.index.refresh import build_retrieval, describe, publish_retrieval, read_catalog
    from streamrank.models.artifact import read_dir
    from streamrank.registry.store import open_registry

    settings = _settings(args)
    if args.model_dir:
        files, model_name, model_version = read_dir(args.model_dir), Path(args.model_dir).name, 0
    else:
        model_name, _, version = args.model.partition(":")
        info, files = open_registry(settings, model_name).read(int(version) if version else None)
        model_version = info.version
    if args.catalog == "topic":
        if not settings.bootstrap_servers:
            print("--catalog topic needs --bootstrap-servers (or STREAMRANK_BOOTSTRAP_SERVERS)", file=sys.stderr)
            return 2
        items = read_catalog(settings)
    elif args.catalog.startswith("movielens:"):
        from streamrank.events.producer import open_source

        items = list(open_source(args.catalog).items or [])
    else:
        from streamrank.data.eventlog import read_items

        items = list(read_items(args.catalog))
    if not 0 <= args.target_recall <= 1 or args.recall_users < 0:
        print(f"index build: --target-recall must be in [0, 1] (got {args.target_recall}) and --recall-users >= 0 "
              f"(got {args.recall_users})", file=sys.stderr)
        return 2
    users = []
    if args.recall_users and settings.bootstrap_servers:
        from streamrank.index.refresh import recent_users

        users = recent_users(settings, args.recall_users)
    try:
        build = build_retrieval(files, items, model_name, model_version, kind=args.kind,
                                min_attribute_coverage=args.min_attribute_coverage, recall_users=users,
                                target_recall=args.target_recall or None)
    except ValueError as exc:
        print(f"index build: {exc}", file=sys.stderr)
        return 2
    info = publish_retrieval(settings, args.name, build)
    print(f"published {args.name} v{info.version}: {describe(build)}")
    return 0


def cmd_train_retrieval(args: argparse.Namespace) -> int:
    """Trains the served two-tower model on a log and writes the folder `index build --model-dir` reads."""
    from streamrank.data.dataset import load_dataset
    from streamrank.data.requests import catalog_items
    from streamrank.index.refresh import check_attributes
    from streamrank.models.artifact import write_dir
    from streamrank.models.retrieval import PRESETS as RETRIEVAL_PRESETS
    from streamrank.models.retrieval.artifact import retrieval_from_files
    from streamrank.train.retrieval_serving import train_servable

    if args.preset not in RETRIEVAL_PRESETS:
        print(f"unknown retrieval preset {args.preset!r}; presets: {', '.join(sorted(RETRIEVAL_PRESETS))}",
              file=sys.stderr)
        return 2
    if args.epochs < 1 or (args.interactions is not None and args.interactions < 3):
        print("--epochs must be >= 1 and --interactions >= 3", file=sys.stderr)
        return 2
    try:
        data = load_dataset(args.dataset, args.items, order=args.order)
        n = len(data.ratings) if args.interactions is None else min(args.interactions, len(data.ratings))
        print(f"{data.name}: training {args.preset} on {n:,} of {len(data.ratings):,} interactions "
              f"({len(data.items):,} catalog items)", flush=True)
        trained = train_servable(data, n, args.preset, args.epochs, args.seed, progress=not args.quiet)
        model, _ = retrieval_from_files(trained.files)
        coverage = check_attributes(model.spec, list(catalog_items(data)))
    except (ValueError, OSError) as exc:
        print(f"train-retrieval: {exc}", file=sys.stderr)
        return 2
    path = write_dir(trained.files, args.out)
    best = trained.fit.history[trained.fit.best_epoch] if trained.fit.history else {}
    hits = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k.startswith("valid_hit"))
    cover = ", ".join(f"{k} {v:.0%}" for k, v in coverage.items()) or "none read"
    print(f"wrote {path} in {trained.fit.seconds:.0f}s (best epoch {trained.fit.best_epoch + 1}: {hits or 'n/a'}); "
          f"catalog attributes known to the model: {cover}\n"
          f"next: streamrank index build --model-dir {path} --catalog {args.items or 'topic'}")
    return 0


def add_retrieval_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds `index` and `train-retrieval` to the `streamrank` subcommands."""
    p = sub.add_parser("index", help="build and publish the retrieval model + FAISS index the scorer serves")
    common(p)
    p.add_argument("action", choices=["build"], help="build and publish")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="retrieval model in the registry: NAME[:VERSION]")
    source.add_argument("--model-dir", help="a directory with a retrieval model's files (model.pt, spec.json, "
                        "config.json)")
    p.add_argument("--catalog", default="topic", help="topic (the items topic), movielens:ml-1m, movielens:ml-100k, "
                   "or a catalog file (.jsonl/.csv)")
    p.add_argument("--name", default="retrieval", help="registry name to publish under (the scorer's serve_retrieval)")
    p.add_argument("--kind", default="auto", choices=["auto", "flat", "ivf", "hnsw"],
                   help="FAISS index kind (auto: exact when small, else IVF; docs/index.md)")
    p.add_argument("--min-attribute-coverage", type=float, default=0.5,
                   help="refuse a catalog where fewer items than this share have a category (or tag) the model was "
                        "trained with (0: index it anyway, e.g. new categories on purpose)")
    p.add_argument("--recall-users", type=int, default=500,
                   help="measure recall on the user-tower vectors of this many recent users from the user-features "
                        "topic (0, or fewer than 50 there: on item-like queries)")
    p.add_argument("--target-recall", type=float, default=0.95,
                   help="widen IVF nprobe / HNSW efSearch until recall@100 on those queries reaches this (0: keep the "
                        "defaults)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("train-retrieval", help="train the served two-tower model on a log (for index build)")
    p.add_argument("--dataset", required=True, help="ml-100k | ml-1m | path to an event log")
    p.add_argument("--items", help="the event log's catalog file (.jsonl/.csv): the item tower learns its "
                   "categories and tags, which index build then reads from the same catalog")
    p.add_argument("--out", required=True, help="folder to write (model.pt, spec.json, config.json)")
    p.add_argument("--preset", default="youtube_dnn", help="retrieval preset (base, youtube_dnn, micrec, ...)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (early stopping on validation)")
    p.add_argument("--interactions", type=int, help="train on the first N interactions only (default: all)")
    p.add_argument("--order", default="sort", choices=["sort", "refuse"],
                   help="an event log not in time order: sort it (with a warning) or refuse it")
    p.add_argument("--seed", type=int, default=0, help="model seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_retrieval)
