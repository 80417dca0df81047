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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamrank import kafka_security
from streamrank.config import Settings
from streamrank.features.raw import Behaviors, Candidate, ItemAttrs, RequestContext
from streamrank.features.spec import FeatureSpec
from streamrank.index import ItemIndex, build_index, index_files
from streamrank.models.retrieval.artifact import retrieval_from_files
from streamrank.registry.store import VersionInfo, open_registry
from streamrank.v1 import events_pb2, features_pb2

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


def _latest_records(settings: Settings, topic: str, tail: int | None, timeout_s: float) -> dict[bytes, bytes | None]:
    """The latest value of every key on a compacted topic (None: a tombstone), read up to the partitions' ends
    as they were when reading began: from the beginning, or only the last `tail` records (split evenly over
    the partitions)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             **kafka_security.kafka_python(settings),
                             group_id=None, fetch_max_wait_ms=100, max_poll_records=10_000)
    latest: dict[bytes, bytes | None] = {}
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return latest
        consumer.assign(tps)
        ends, begins = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
        per = -(-tail // len(tps)) if tail is not None else 0
        for tp in tps:
            back = ends[tp] - per if tail is not None else begins[tp]
            consumer.seek(tp, max(begins[tp], back))
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout_s}s")
            for batch in consumer.poll(timeout_ms=200).values():
                latest.update((r.key, r.value) for r in batch if r.key)
    finally:
        consumer.close()
    return latest


def read_catalog(settings: Settings, timeout_s: float = 60) -> list[events_pb2.Item]:
    """The latest entry of every item on the compacted items topic (read from the start to its end)."""
    latest = _latest_records(settings, settings.topic("items"), None, timeout_s)
    return [events_pb2.Item.FromString(v) for v in latest.values() if v]


def recent_users(settings: Settings, n: int = 500, timeout_s: float = 60) -> list[features_pb2.UserFeatures]:
    """The `n` most recently updated users on the compacted user-features topic, read from near the end of
    each partition (2n / partitions records each): the users whose tower vectors Retrieve answers next."""
    if n <= 0:
        return []
    latest = _latest_records(settings, settings.topic("user-features"), 2 * n, timeout_s)
    users = [features_pb2.UserFeatures.FromString(v) for v in latest.values() if v]
    return sorted(users, key=lambda u: u.updated_ms, reverse=True)[:n]


MIN_ATTRIBUTE_COVERAGE = 0.5
MIN_RECALL_USERS = 50  # fewer real users than this: item-like queries measure recall instead


def attribute_coverage(spec: FeatureSpec, items: Sequence[events_pb2.Item]) -> dict[str, float]:
    """Per item attribute the item tower reads (category, tags), the share of catalog items that carry a
    value the model was trained with; attributes the model has no vocabulary for (or the catalog never
    fills) are left out. A low share means the catalog and the training data do not name things alike."""
    out: dict[str, float] = {}
    for name, values in (("category", lambda it: [it.category] if it.category else []),
                         ("tag", lambda it: list(it.tags))):
        vocab = spec.vocabs.get(name)
        filled = [values(it) for it in items if values(it)]
        if vocab is None or not vocab.num_live or not filled:  # the model was not trained on it
            continue
        out[name] = sum(any(v in vocab for v in vals) for vals in filled) / len(filled)
    return out


def check_attributes(spec: FeatureSpec, items: Sequence[events_pb2.Item],
                     minimum: float = MIN_ATTRIBUTE_COVERAGE) -> dict[str, float]:
    """`attribute_coverage`, refused (ValueError, with examples of both sides) below `minimum`."""
    coverage = attribute_coverage(spec, items)
    for name, share in coverage.items():
        if share < minimum:
            vocab = spec.vocabs[name]
            known = [t for i in range(len(vocab)) if (t := vocab.token(i)) and t in vocab][:5]
            seen = sorted({v for it in items for v in ([it.category] if name == "category" else it.tags) if v})[:5]
            raise ValueError(f"only {share:.0%} of the catalog's items have a {name} the retrieval model was trained "
                             f"with (model: {known}...; catalog: {seen}...): train it on this catalog "
                             "(streamrank train-retrieval --dataset LOG --items CATALOG)")
    return coverage


def build_retrieval(model_files: dict[str, bytes], items: Iterable[events_pb2.Item], model_name: str,
                    model_version: int, kind: str = "auto", min_attribute_coverage: float = MIN_ATTRIBUTE_COVERAGE,
                    recall_users: Sequence[features_pb2.UserFeatures] = (), target_recall: float | None = None,
                    **index_params: int) -> RetrievalBuild:
    """Encodes the catalog with the model's item tower and indexes it; refuses an empty catalog and one
    whose categories or tags the model was not trained with (`check_attributes`; 0 turns it off).

    Recall is measured on the user tower's vectors of `recall_users` (recent users: what Retrieve really
    searches with) when there are at least MIN_RECALL_USERS of them, else on item-like queries; with
    `target_recall` the index's search parameter is widened until that recall holds (`index.tune`)."""
    start = time.perf_counter()
    model, preset = retrieval_from_files(model_files)
    if model.spec.user_fields:
        raise ValueError(f"{model_name} needs user profile fields {list(model.spec.user_fields)} that the "
                         "scorer cannot supply; train the served retrieval model without user_fields")
    items = list(items)
    cands = [item_candidate(it) for it in items]
    if not cands:
        raise ValueError("the catalog is empty: nothing to index")
    check_attributes(model.spec, items, min_attribute_coverage)
    vectors = model.encode_items(cands)
    sample = None
    if len(recall_users) >= MIN_RECALL_USERS:
        sample = model.encode_users([RequestContext(u.user_id, Behaviors.from_proto(u.behaviors))
                                     for u in recall_users])
    elif recall_users:
        log.warning("only %d recent users: recall is measured on item-like queries", len(recall_users))
    index = build_index(vectors, [c.item_id for c in cands], kind=kind, model=model_name,
                        model_version=model_version, recall_sample=sample, target_recall=target_recall,
                        **index_params)
    return package_retrieval(model_files, index, preset, time.perf_counter() - start)


def package_retrieval(model_files: dict[str, bytes], index: ItemIndex, preset: str,
                      seconds: float = 0.0) -> RetrievalBuild:
    """One version's files and metadata from a model and an index built over its item vectors."""
    meta = {"model": index.meta.model, "model_version": index.meta.model_version, "preset": preset,
            "index": index.meta.to_dict()}
    return RetrievalBuild({**model_files, **index_files(index)}, meta, len(index), seconds)


def publish_retrieval(settings: Settings, name: str, build: RetrievalBuild) -> VersionInfo:
    """Publishes a built version under `name` (the scorer's serve_retrieval) and makes it current."""
    registry = open_registry(settings, name)
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
