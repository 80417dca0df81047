"""Builds the retrieval version the scorer serves: a two-tower model and the FAISS index of its item tower.

Model and index are published together, as one registry version (the model's files plus the index's),
so the user tower a Retrieve call runs always matches the item vectors it searches: there is no window in
which a new model meets an old index. The catalog comes from the compacted items topic (what production
services publish) or from a MovieLens catalog; the index records its recall against exact search.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from streamrank.config import Settings
from streamrank.features.raw import Candidate, ItemAttrs
from streamrank.index import ItemIndex, build_index, index_files
from streamrank.models.retrieval.artifact import retrieval_from_files
from streamrank.registry.store import Registry, VersionInfo
from streamrank.v1 import events_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievalBuild:
    """A built retrieval version, ready to publish."""

    files: dict[str, bytes]
    meta: dict
    items: int
    seconds: float


def item_candidate(item: events_pb2.Item) -> Candidate:
    """A catalog entry as the item tower's input (the same fields the scorer's replica reads)."""
    return Candidate(item.item_id, ItemAttrs(category=item.category, brand=item.brand,
                                             price=item.price if item.HasField("price") else None,
                                             tags=list(item.tags)))


def read_catalog(settings: Settings, timeout_s: float = 60) -> list[events_pb2.Item]:
    """The latest entry of every item on the compacted items topic (read from the start to its end)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topic("items")
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             group_id=None, fetch_max_wait_ms=100, max_poll_records=10_000)
    latest: dict[bytes, bytes | None] = {}
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                for r in batch:
                    if r.key:
                        latest[r.key] = r.value
            highs = [consumer.highwater(tp) for tp in tps]
            if all(h is not None and consumer.position(tp) >= h for tp, h in zip(tps, highs, strict=True)):
                break
        else:
            raise TimeoutError(f"could not read {topic} to its end within {timeout_s}s")
    finally:
        consumer.close()
    return [events_pb2.Item.FromString(v) for v in latest.values() if v]


def build_retrieval(model_files: dict[str, bytes], items: Iterable[events_pb2.Item], model_name: str,
                    model_version: int, kind: str = "auto", **index_params: int) -> RetrievalBuild:
    """Encodes the catalog with the model's item tower and indexes it; refuses an empty catalog."""
    start = time.perf_counter()
    model, preset = retrieval_from_files(model_files)
    if model.spec.user_fields:
        raise ValueError(f"{model_name} needs user profile fields {list(model.spec.user_fields)} that the "
                         "scorer cannot supply; train the served retrieval model without user_fields")
    cands = [item_candidate(it) for it in items]
    if not cands:
        raise ValueError("the catalog is empty: nothing to index")
    vectors = model.encode_items(cands)
    index = build_index(vectors, [c.item_id for c in cands], kind=kind, model=model_name,
                        model_version=model_version, **index_params)
    return package_retrieval(model_files, index, preset, time.perf_counter() - start)


def package_retrieval(model_files: dict[str, bytes], index: ItemIndex, preset: str,
                      seconds: float = 0.0) -> RetrievalBuild:
    """One version's files and metadata from a model and an index built over its item vectors."""
    meta = {"model": index.meta.model, "model_version": index.meta.model_version, "preset": preset,
            "index": index.meta.to_dict()}
    return RetrievalBuild({**model_files, **index_files(index)}, meta, len(index), seconds)


def publish_retrieval(settings: Settings, name: str, build: RetrievalBuild) -> VersionInfo:
    """Publishes a built version under `name` (the scorer's serve_retrieval) and makes it current."""
    registry = Registry(settings.registry_root(), name)
    info = registry.publish(build.files, build.meta)
    registry.prune(settings.registry_keep)
    log.info("published %s v%d: %d items, recall@%s %.4f", name, info.version, build.items,
             build.meta["index"]["recall_k"], build.meta["index"]["recall_at_k"])
    return info


def describe(build: RetrievalBuild) -> str:
    """One line for the console."""
    m = build.meta["index"]
    return (f"{build.items:,} items, {m['kind']} index, recall@{m['recall_k']} {m['recall_at_k']:.4f} "
            f"vs exact, built in {build.seconds:.1f}s; model {build.meta['model']} v{build.meta['model_version']}"
            f" ({json.dumps(m['params'])})")
