"""Builds the worker's output messages (samples, user snapshots, co-occurrence updates) from its state."""

from __future__ import annotations

import json

from streamrank.config import Settings
from streamrank.stream.userstate import PendingImpression, PendingRequest, UserState
from streamrank.v1 import features_pb2


def _fill_sequence(seq: features_pb2.BehaviorSequence, items: list[str], types: list[int],
                   stamps: list[int], cats: list[str]) -> None:
    seq.item_ids.extend(items)
    seq.types.extend(types)
    seq.ts_ms.extend(stamps)
    seq.categories.extend(cats)


def request_template(user_id: str, request_id: str, ts_ms: int, session_id: str, scenario: str, query: str,
                     sequence: tuple[list[str], list[int], list[int], list[str]]) -> bytes:
    """The point-in-time part shared by every impression of a request, serialized once when the request opens.

    The worker keeps it as bytes with the open request: a waiting request is stored (pickled) in every batch
    that changes it, and bytes cost a copy where the behaviour lists cost a few hundred objects.
    """
    template = features_pb2.TrainingSample(
        user_id=user_id, request_id=request_id, session_id=session_id, scenario=scenario, query=query,
        impression_ts_ms=ts_ms,
    )
    _fill_sequence(template.behaviors, *sequence)
    return template.SerializeToString()


def _request_template(req: PendingRequest, policy: int) -> features_pb2.TrainingSample:
    template = features_pb2.TrainingSample.FromString(req.template)
    template.label_policy = policy  # type: ignore[assignment]
    return template


def _impression_sample(template: features_pb2.TrainingSample, item_id: str, imp: PendingImpression,
                       emission: int, emitted_ts_ms: int, labels: tuple[bool, bool, bool] | None = None) -> bytes:
    sample = features_pb2.TrainingSample()
    sample.CopyFrom(template)
    sample.sample_id = imp.event_id
    sample.item_id = item_id
    sample.position = imp.position
    sample.emission = emission  # type: ignore[assignment]
    sample.emitted_ts_ms = emitted_ts_ms
    if emission != features_pb2.EMISSION_IMPRESSION:  # a provisional emission has every label false
        click, atc, purchase = imp.labels if labels is None else labels
        sample.labels.click = click
        sample.labels.add_to_cart = atc
        sample.labels.purchase = purchase
    attrs = sample.item
    attrs.category = imp.category
    attrs.brand = imp.brand
    attrs.shop = imp.shop
    if imp.price is not None:
        attrs.price = imp.price
    counts = sample.counts
    (counts.item_impressions, counts.item_clicks, counts.item_purchases,
     counts.user_item_clicks, counts.user_category_clicks) = imp.counts
    return sample.SerializeToString()


def sample_messages(user_id: str, request_id: str, req: PendingRequest,
                    policy: int = features_pb2.LABEL_POLICY_WINDOW, emitted_ts_ms: int = 0
                    ) -> list[tuple[bytes, bytes]]:
    """One serialized TrainingSample per impression of a request whose window closed (final labels), keyed
    by user. Under either policy these carry the full features, so a window-policy trainer can learn from a
    fake_negative stream."""
    key = user_id.encode()
    template = _request_template(req, policy)
    return [(key, _impression_sample(template, item_id, imp, features_pb2.EMISSION_WINDOW_CLOSED, emitted_ts_ms))
            for item_id, imp in req.impressions.items()]


def emission_message(user_id: str, request_id: str, req: PendingRequest, item_id: str, emission: int,
                     emitted_ts_ms: int, labels: tuple[bool, bool, bool]) -> tuple[bytes, bytes]:
    """One fake_negative emission of one impression (EMISSION_IMPRESSION or EMISSION_POSITIVE) with the labels
    it had when emitted, and the impression's point-in-time features, exactly as its window-closed sample will
    carry them."""
    template = _request_template(req, features_pb2.LABEL_POLICY_FAKE_NEGATIVE)
    return user_id.encode(), _impression_sample(template, item_id, req.impressions[item_id], emission,
                                                emitted_ts_ms, labels)


def user_snapshot(user: UserState, settings: Settings) -> bytes:
    """The compacted UserFeatures record scorers read for this user."""
    msg = features_pb2.UserFeatures(
        user_id=user.user_id, updated_ms=user.max_ts, impressions=user.totals[0], clicks=user.totals[1],
        add_to_carts=user.totals[2], purchases=user.totals[3],
    )
    _fill_sequence(msg.behaviors, *user.snapshot(settings.feature_sequence_length))
    msg.item_clicks.update(user.item_clicks)
    msg.category_clicks.update(user.category_clicks)
    # Maps serialize in hash order, which upb seeds per process: deterministic=True sorts their keys, so a
    # re-sent snapshot has the bytes of its first copy.
    return msg.SerializeToString(deterministic=True)


def item_stats_key(scenario: str, item_id: str) -> bytes:
    """The compacted item-stats key: one record per (scenario, item). Every worker holds the counts of the
    whole topic below the frontier; the owner of the key's partition publishes them (readers keep the
    record with the newest `updated_ms`)."""
    return f"{scenario}\x1f{item_id}".encode()


def item_stats_record(scenario: str, item_id: str, producer: str, counts: list[int],
                      ts_ms: int) -> tuple[bytes, bytes]:
    """An ItemStats record with an item's counters in a scenario below the frontier `ts_ms`, keyed for the
    compacted topic; `producer` names the worker that sent it (diagnostics only)."""
    msg = features_pb2.ItemStats(
        scenario=scenario, item_id=item_id, producer=producer, impressions=counts[0], clicks=counts[1],
        add_to_carts=counts[2], purchases=counts[3], updated_ms=ts_ms,
    )
    return item_stats_key(scenario, item_id), msg.SerializeToString()


def cooc_update(item_id: str, neighbours: dict[str, int], producer: str, batch: int, ts_ms: int) -> bytes:
    """A CoocUpdate with one item's count changes from one batch."""
    msg = features_pb2.CoocUpdate(item_id=item_id, producer=producer, batch=batch, ts_ms=ts_ms)
    msg.neighbor_ids.extend(neighbours.keys())
    msg.deltas.extend(neighbours.values())
    return msg.SerializeToString()


def exchange_message(partition: int, sealed_to: int, idle: bool,
                     buckets: dict[int, dict[tuple[str, str], list[int]]], watermark: int,
                     frontier: int) -> tuple[bytes, bytes]:
    """A counter exchange record (JSON: plain data, nothing in it can run), keyed by source partition so
    that one partition's records stay in order."""
    body = {"p": partition, "z": sealed_to, "idle": idle, "w": watermark, "f": frontier,
            "b": [[start, [[s, i, *row] for (s, i), row in rows.items()]] for start, rows in buckets.items()]}
    return str(partition).encode(), json.dumps(body, separators=(",", ":")).encode()


def decode_exchange(raw: bytes) -> tuple[int, int, bool, dict[int, dict[tuple[str, str], list[int]]], int, int]:
    """(partition, sealed floor, idle, buckets, watermark, sender's frontier) of a counter exchange record;
    ValueError when malformed."""
    try:
        body = json.loads(raw)
        buckets = {int(start): {(str(r[0]), str(r[1])): [int(x) for x in r[2:6]] for r in rows}
                   for start, rows in body["b"]}
        return (int(body["p"]), int(body["z"]), bool(body["idle"]), buckets, int(body.get("w", 0)),
                int(body.get("f", 0)))
    except (KeyError, TypeError, IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed counter exchange record: {exc}") from exc
