"""The scorer's feature replica over real RocksDB: updates, tombstones, the newest item stats, durable offsets."""

from __future__ import annotations

from pathlib import Path

from streamrank.config import load_settings
from streamrank.serve.replica import FeatureReplica
from streamrank.stream.encode import item_stats_record
from streamrank.v1 import events_pb2, features_pb2
from tests.servetools import user_features


def _replica(tmp_path: Path) -> FeatureReplica:
    return FeatureReplica(load_settings(data_dir=str(tmp_path)), tmp_path / "replica")


def _item(item_id: str, category: str) -> tuple[str, int, int, bytes, bytes]:
    return ("streamrank.items", 0, 0, item_id.encode(),
            events_pb2.Item(item_id=item_id, category=category, price=3.5).SerializeToString())


def test_updates_replace_cached_values_and_tombstones_delete(tmp_path: Path) -> None:
    rep = _replica(tmp_path)
    rep.apply([_item("a", "shoes")])
    assert rep.item("a").category == "shoes" and rep.item("a").price == 3.5  # second read from the cache
    rep.apply([("streamrank.items", 0, 1, b"a", events_pb2.Item(item_id="a", category="boots").SerializeToString())])
    assert rep.item("a").category == "boots"
    rep.apply([("streamrank.items", 0, 2, b"a", None)])
    assert rep.item("a") is None
    rep.close()


def test_item_stats_keep_the_newest_frontier_and_cache_follows_updates(tmp_path: Path) -> None:
    rep = _replica(tmp_path)
    # Every worker holds the whole topic's counts; a key's owner publishes them. After a rebalance the old
    # owner's record (an older frontier) can arrive after the new owner's: the newest frontier wins, in one
    # batch and across batches, and the counts are never summed over producers.
    k1, v1 = item_stats_record("web", "a", "w1", [10, 3, 0, 1], 7)
    k2, v2 = item_stats_record("web", "a", "w2", [5, 1, 0, 0], 5)
    assert k1 == k2
    rep.apply([("streamrank.item-stats", 0, 0, k1, v1), ("streamrank.item-stats", 1, 0, k2, v2)])
    assert rep.item_counts("web", "a") == (10, 3, 1)
    assert rep.item_counts("app", "a") == (0, 0, 0)
    rep.apply([("streamrank.item-stats", 1, 1, k2, v2)])
    assert rep.item_counts("web", "a") == (10, 3, 1), "an older frontier replaced a newer one"
    k3, v3 = item_stats_record("web", "a", "w2", [20, 6, 0, 2], 8)
    rep.apply([("streamrank.item-stats", 1, 2, k3, v3)])
    assert rep.item_counts("web", "a") == (20, 6, 2), "the cache kept a replaced value"
    rep.apply([("streamrank.item-stats", 1, 3, k3, None)])
    assert rep.item_counts("web", "a") == (0, 0, 0)
    # A record of the earlier layout (the worker id in the key) lands under its (scenario, item).
    old = features_pb2.ItemStats(scenario="web", item_id="b", producer="w1", impressions=4, updated_ms=9)
    rep.apply([("streamrank.item-stats", 0, 1, b"web\x1fb\x1fw1", old.SerializeToString())])
    assert rep.item_counts("web", "b") == (4, 0, 0)
    rep.close()


def test_users_and_offsets_survive_reopening(tmp_path: Path) -> None:
    rep = _replica(tmp_path)
    msg = user_features("u1", ["x", "y"], ["c", "d"], clicks={"x": 2})
    msg.category_clicks["c"] = 4
    rep.apply([("streamrank.user-features", 3, 41, b"u1", msg.SerializeToString())])
    rep.close()
    again = _replica(tmp_path)
    view = again.user("u1")
    assert view is not None and view.behaviors.item_ids == ["x", "y"] and view.behaviors.categories == ["c", "d"]
    assert view.item_clicks == {"x": 2} and view.category_clicks == {"c": 4}
    assert again.user("nobody") is None
    assert again._offsets() == {("streamrank.user-features", 3): 42}  # the next offset to read
    again.close()
