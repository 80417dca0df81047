"""The state changelog (stream/changelog.py): what a partition's new owner restores, and that it then goes on
emitting exactly what the single worker emits; state values read from disk or the topic cannot run code.
In-process over real RocksDB (the broker-level hand-off is in test_counters_workers.py)."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import pytest

from streamrank.stream.changelog import closed_key, fold, meta_value, tag, user_key
from streamrank.stream.processor import BatchProcessor, ExchangeRecord, Record
from streamrank.stream.statecodec import UnsafeStateError, dump_state, load_state
from streamrank.stream.store import StateStore
from streamrank.stream.userstate import UserState
from tests.test_counters import _interleaved, _log, _records, _replay, _settings
from tests.test_processor import NOW


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_state_values_that_name_other_code_are_refused(tmp_path: Path) -> None:
    user = UserState("u1", partition=2, seq_items=["a"], seq_types=[1], seq_ts=[5], seq_cats=["c"],
                     seq_sessions=["s"])
    assert load_state(dump_state(user)) == user
    with pytest.raises(UnsafeStateError, match=r"builtins\.print"):
        load_state(pickle.dumps(_Evil()))
    store = StateStore(tmp_path / "state")
    store.db.put(b"uevil", pickle.dumps(_Evil()))  # a forged row on disk
    with pytest.raises(UnsafeStateError):
        store.load_user("evil")
    store.close()


def test_fold_takes_the_newest_completed_batches_only() -> None:
    a1, a2, z1, b1 = tag(1, 1), tag(1, 2), tag(9, 1), tag(2, 1)
    records = [
        (user_key("u1"), a1 + b"u1-v1"), (closed_key("u1", "r1"), a1 + b"req"), (b"P", a1 + meta_value(5, 50, [], [])),
        (user_key("u1"), a2 + b"u1-v2"),  # writer 1 died before its batch 2's P: ignored
        (user_key("u2"), z1 + b"u2-zombie"), (b"P", z1 + meta_value(3, 30, [], [])),  # behind offset 5: ignored
        (closed_key("u1", "r1"), b1 + b""), (user_key("u3"), b1 + b"u3-v1"),
        (b"P", b1 + meta_value(9, 90, [1, 0, 2, 0, 0, 120_000, 1, 0, 0, 0], [("web", "i1")])),
        (None, b"x"), (b"Zjunk", b1 + b"x"), (user_key("u4"), b"short"),  # malformed
    ]
    image = fold(4, records)
    assert image.users == {"u1": b"u1-v1", "u3": b"u3-v1"}
    assert image.closed == {("u1", "r1"): b""}
    assert (image.offset, image.watermark) == (9, 90)
    assert image.open_keys == [("web", "i1")] and image.open_ints[5:] == [120_000, 1, 0, 0, 0]
    assert image.records == len(records)
    assert image.ignored == 1 + 2 + 3


def _run_batches(proc: BatchProcessor, records: list[Record], batch: int, changelog: dict[int, list] | None,
                 exchange: list[ExchangeRecord], killed_before: str = "") -> list[bytes]:
    """Feeds records in batches as the worker does (outputs, commit, changelog, exchange records); collects
    them. `killed_before`: the last batch stops before its "changelog" (so sends no exchange either) or
    before its "exchange" records."""
    out: list[bytes] = []
    batches = [records[i:i + batch] for i in range(0, len(records), batch)]
    for n, chunk in enumerate(batches):
        result = proc.process(chunk)
        proc.commit(result)
        out.extend(v for _, v in result.samples)
        last = n == len(batches) - 1
        if changelog is not None and not (last and killed_before == "changelog"):
            for p, messages in result.changelog.items():
                changelog.setdefault(p, []).extend(messages)
        if not (last and killed_before):
            exchange.extend(result.exchange)
    return out


@pytest.mark.parametrize("killed_before", ["changelog", "exchange"])
@pytest.mark.parametrize("policy", ["window", "fake_negative"])
def test_a_worker_restored_from_the_changelog_emits_what_the_single_worker_does(tmp_path: Path, policy: str,
                                                                               killed_before: str) -> None:
    """Worker A owns every partition and dies after 60% of the log, having sent its last batch's outputs but
    not its changelog records, or those but not its exchange records; worker B restores every partition from
    the changelog, reads A's exchange records and goes on from the restored offsets (sending again what the
    image says A sealed). What A and B sent together is the single worker's samples (item counters included),
    and what B re-sent of A's last batch is byte-identical."""
    settings = _settings(label_policy=policy)
    parts = _records(_log(seed=3, requests=200, users=16), settings)
    assert all(parts.values())
    order = _interleaved(parts)
    single = _replay(tmp_path / "single", settings, order, batch=9)
    everything = set(range(settings.partitions))

    a = BatchProcessor(settings, StateStore(tmp_path / "a"), now_ms=NOW)
    a.assigned, a.changelog_writer = set(everything), 1
    changelog: dict[int, list] = {}
    exchange: list[ExchangeRecord] = []
    cut = 9 * (len(order) * 6 // 90)  # A's last batch is a whole one
    sent_a = _run_batches(a, order[:cut], 9, changelog, exchange, killed_before)
    a.store.close()

    b = BatchProcessor(settings, StateStore(tmp_path / "b"), now_ms=NOW)
    b.assigned, b.changelog_writer = set(everything), 2
    b.apply_exchange(exchange)  # the worker reads the exchange topic to its end before it restores
    for p in sorted(everything):
        image = fold(p, changelog.get(p, []))
        assert image.offset >= 0 and image.users
        b.adopt(image, ("changelog", p), len(changelog[p]) - 1)
    # what the last image's batch sealed goes out again (the other workers may never have had it)
    assert b.resend_exchange or killed_before != "exchange"
    rest = [r for r in order if r.offset > b.offsets[(settings.topic("events"), r.partition)]]
    # A's last batch is processed again when its changelog records were lost
    assert len(rest) == len(order) - cut + (9 if killed_before == "changelog" else 0)
    sent_b = _run_batches(b, rest, 9, None, [])
    b.idle = set(everything)
    tail = b.tick()
    b.commit(tail)
    sent_b.extend(v for _, v in tail.samples)
    assert not b.waiting

    assert len(single) > 300 and len(set(single)) == len(single)
    assert set(sent_a) | set(sent_b) == set(single), "the restored worker emitted other samples"
    resent = Counter(sent_a + sent_b) - Counter(single)
    assert set(resent) <= set(sent_a), "a sample sent twice is one of A's, with the same bytes"
    if policy == "fake_negative" and killed_before == "changelog":  # impressions emit at once: some re-sent
        assert sum(resent.values()) > 0
    b.store.close()


def test_a_restored_partition_is_durable_at_once(tmp_path: Path) -> None:
    """adopt() writes the image to RocksDB: a restart right after it starts from the restored offset."""
    settings = _settings()
    parts = _records(_log(seed=5, requests=60, users=16), settings)
    assert parts[1]
    a = BatchProcessor(settings, StateStore(tmp_path / "a"), now_ms=NOW)
    a.assigned, a.changelog_writer = {0, 1, 2, 3}, 1
    changelog: dict[int, list] = {}
    _run_batches(a, _interleaved(parts), 11, changelog, [])
    a.store.close()
    b = BatchProcessor(settings, StateStore(tmp_path / "b"), now_ms=NOW)
    image = fold(1, changelog[1])
    b.adopt(image, ("changelog", 1), 41)
    b.store.close()
    store = StateStore(tmp_path / "b")
    offsets = store.load_offsets()
    assert offsets[(settings.topic("events"), 1)] == image.offset == len(parts[1]) - 1
    assert offsets[("changelog", 1)] == 41
    assert {u.user_id for u in store.iter_users()} == set(image.users)
    store.close()
