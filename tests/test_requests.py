"""The request stream made from MovieLens ratings (docs/interaction-only-logs.md)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from streamrank.config import Settings
from streamrank.data.movielens import MovieItem, MovieLens, MovieUser, build_ratings, load_movielens
from streamrank.data.requests import (
    age_bucket,
    count_events,
    item_popularity,
    movielens_events,
    movielens_items,
    sample_negatives,
)
from streamrank.events.validate import check_event
from streamrank.v1 import events_pb2

IMP, CLICK, BUY = events_pb2.IMPRESSION, events_pb2.CLICK, events_pb2.PURCHASE


@pytest.fixture(scope="module")
def ml() -> MovieLens:
    return load_movielens("ml-100k")


@pytest.fixture(scope="module")
def stream(ml: MovieLens) -> list[events_pb2.Event]:
    """The whole ML-100K stream with one negative (about 355k events, a couple of seconds)."""
    return list(movielens_events(ml))


def _requests(events: list[events_pb2.Event]) -> dict[str, list[events_pb2.Event]]:
    grouped: dict[str, list[events_pb2.Event]] = defaultdict(list)
    for event in events:
        grouped[event.request_id].append(event)
    return grouped


def test_sizes(ml: MovieLens, stream: list[events_pb2.Event]) -> None:
    assert len(stream) == count_events(ml, negatives=1) == len(movielens_events(ml)) == 355_375
    counts = Counter(e.type for e in stream)
    assert counts == {IMP: 200_000, CLICK: 100_000, BUY: 55_375}
    assert len({e.event_id for e in stream}) == len(stream)


def test_request_shape(ml: MovieLens, stream: list[events_pb2.Event]) -> None:
    settings = Settings()
    requests = _requests(stream)
    assert len(requests) == 100_000
    ratings = ml.ratings
    for index in range(0, 100_000, 97):  # a spread-out sample of requests
        events = requests[f"ml-100k-{index}"]
        types = [e.type for e in events]
        stars = float(ratings.rating[index])
        assert types == [IMP, IMP, CLICK] + ([BUY] if stars >= 4 else [])
        imps, click = events[:2], events[2]
        assert [e.position for e in imps] == [0, 1]
        assert click.item_id == ratings.item_id[index] == imps[click.position].item_id
        assert imps[0].item_id != imps[1].item_id
        assert imps[0].ts_ms < click.ts_ms and click.ts_ms // 1000 == ratings.ts_s[index]
        assert {e.user_id for e in events} == {ratings.user_id[index]}
        assert len({(e.session_id, e.scenario) for e in events}) == 1
        assert click.item.category == ml.items[click.item_id].genres[0]
        assert click.scenario == f"age:{age_bucket(ml.users[click.user_id].age)}"
        for event in events:
            check_event(event, settings)


def test_stream_order_and_user_time(stream: list[events_pb2.Event]) -> None:
    seen_click: set[str] = set()
    last_ts: dict[str, int] = {}
    for event in stream:
        if event.type == IMP:
            assert event.request_id not in seen_click  # impressions come before their click
        elif event.type == CLICK:
            seen_click.add(event.request_id)
        assert event.ts_ms >= last_ts.get(event.user_id, 0)  # a user's event time never goes back
        last_ts[event.user_id] = event.ts_ms


def test_positions_are_shuffled(stream: list[events_pb2.Event]) -> None:
    clicks = Counter(e.position for e in stream if e.type == CLICK)
    assert set(clicks) == {0, 1}
    assert abs(clicks[0] - 50_000) < 1_500


def test_negatives_follow_popularity(ml: MovieLens, stream: list[events_pb2.Event]) -> None:
    clicked = {e.request_id: e.item_id for e in stream if e.type == CLICK}
    shown = Counter(e.item_id for e in stream if e.type == IMP and e.item_id != clicked[e.request_id])
    assert sum(shown.values()) == 100_000
    popularity = item_popularity(ml)
    expected = popularity / popularity.sum() * 100_000
    for code in np.argsort(-popularity)[:20]:  # the most popular items, each expected ~300-580 times
        item = ml.ratings.item_vocab[code]
        assert abs(shown[item] - expected[code]) < 0.2 * expected[code] + 30, item
    vocab = ml.ratings.item_vocab
    assert np.corrcoef([shown[i] for i in vocab], expected)[0, 1] > 0.95


def test_many_negatives_distinct_and_never_positive(ml: MovieLens) -> None:
    events = list(movielens_events(ml, negatives=20, limit=2_000))
    for request_events in _requests(events).values():
        imps = [e.item_id for e in request_events if e.type == IMP]
        click = next(e for e in request_events if e.type == CLICK)
        assert len(imps) == 21 and len(set(imps)) == 21
        assert imps.count(click.item_id) == 1


def test_sample_negatives_directly() -> None:
    rng = np.random.default_rng(1)
    popularity = np.array([0, 5, 1, 0, 100, 3])
    positives = np.full(5_000, 4)
    negatives = sample_negatives(rng, positives, 2, popularity)
    assert negatives.shape == (5_000, 2)
    assert set(np.unique(negatives)) <= {1, 2, 5}  # never the positive, never zero-popularity items
    assert np.all(negatives[:, 0] != negatives[:, 1])
    assert set(sample_negatives(rng, positives, 3, popularity)[0]) == {1, 2, 5}  # all that is left
    with pytest.raises(ValueError, match="distinct negatives"):
        sample_negatives(rng, positives, 4, popularity)


def test_deterministic(ml: MovieLens) -> None:
    first = list(movielens_events(ml, negatives=3, seed=7, limit=5_000))
    again = list(movielens_events(ml, negatives=3, seed=7, limit=5_000))
    other = list(movielens_events(ml, negatives=3, seed=8, limit=5_000))
    assert first == again
    assert first != other
    prefix = list(movielens_events(ml, negatives=3, seed=7, limit=4_100))  # limit cuts inside a chunk
    assert prefix == first[: len(prefix)]


def _tiny() -> MovieLens:
    minute = 60
    t0 = 1_000_000_000
    rows = [  # user, item, rating, ts_s
        ("u", "a", 5, t0), ("u", "b", 3, t0), ("v", "a", 4, t0), ("u", "c", 2, t0 + 29 * minute),
        ("u", "a", 1, t0 + 60 * minute), ("u", "b", 5, t0 + 90 * minute), ("v", "c", 4, t0 + 200 * minute),
    ]
    ratings = build_ratings(*(list(col) for col in zip(*rows, strict=True)))
    items = {i: MovieItem(i, i.upper(), None, ("G",) if i != "c" else ()) for i in "abc"}
    users = {"u": MovieUser("u", 30, "F", "x", "1"), "v": MovieUser("v", None, "M", "y", "2")}
    return MovieLens("tiny", ratings, items, users)


def test_sessions_ties_and_scenarios() -> None:
    ml = _tiny()
    clicks = [e for e in movielens_events(ml, negatives=1, seed=3) if e.type == CLICK]
    by_user: dict[str, list[events_pb2.Event]] = defaultdict(list)
    for click in clicks:
        by_user[click.user_id].append(click)
    # gaps of 0, 29 min, 31 min, 30 min (not more than 30: same session)
    assert [c.session_id for c in by_user["u"]] == ["u/s1", "u/s1", "u/s1", "u/s2", "u/s2"]
    assert [c.session_id for c in by_user["v"]] == ["v/s1", "v/s2"]
    t0 = 1_000_000_000_000
    assert [c.ts_ms - t0 for c in by_user["u"][:2]] == [1, 4]  # the second rating in one second: +3 ms
    assert by_user["v"][0].ts_ms - t0 == 1
    assert {c.scenario for c in by_user["u"]} == {"age:25"} and {c.scenario for c in by_user["v"]} == {""}
    assert not by_user["u"][2].HasField("item")  # item c has no genre: no attributes
    none = [e for e in movielens_events(ml, scenario_field="none") if e.scenario]
    assert none == []
    gender = {e.scenario for e in movielens_events(ml, scenario_field="gender")}
    assert gender == {"gender:F", "gender:M"}
    short = [e for e in movielens_events(ml, session_gap_ms=60_000) if e.type == CLICK and e.user_id == "u"]
    assert [c.session_id for c in short] == ["u/s1", "u/s1", "u/s2", "u/s3", "u/s4"]
    with pytest.raises(ValueError, match="scenario field"):
        movielens_events(ml, scenario_field="income")


def test_items(ml: MovieLens) -> None:
    items = list(movielens_items(ml))
    assert len(items) == len(movielens_items(ml)) == 1_682
    toy = items[0]
    assert (toy.item_id, toy.title, toy.category) == ("1", "Toy Story (1995)", "Animation")
    assert list(toy.tags) == ["Animation", "Children's", "Comedy"]
    assert not toy.brand and not toy.HasField("price")


def test_ages_map_to_the_ml1m_buckets() -> None:
    assert [age_bucket(a) for a in (7, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 80)] == [
        1, 1, 18, 18, 25, 25, 35, 35, 45, 45, 50, 50, 56, 56]
