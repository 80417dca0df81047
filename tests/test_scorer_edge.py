"""The scorer's edge against a real scorer on loopback (embedded broker, RocksDB replica, registry on disk):
bytes that are no request, requests beyond the limits, refusals under load, memory under a burst, health
per model, metrics per model and version."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamrank.config import Settings
from streamrank.serve.admission import Admission
from streamrank.serve.requests import Limits, validate_rank
from streamrank.serve.server import SERVICE_NAME, model_health_service
from streamrank.serve.wire import check_rank_counts, max_request_bytes
from streamrank.v1 import ranking_pb2
from tests.servetools import (
    ScorerThread,
    catalog,
    produce_state,
    publish,
    rank_request,
    running_scorer,
    trained_files,
    user_features,
)

_FILES: dict[str, dict[str, bytes]] = {}
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def edge(settings: Settings) -> Settings:
    """One DIN version, a catalog and a user with history."""
    s = settings.with_overrides(serve_port=0, serve_metrics_port=0, serve_models="din", serve_retrieval="",
                                serve_poll_s=0.2)
    if "din" not in _FILES:
        _FILES["din"] = trained_files(s, "din", n=512)
    publish(s, "din", _FILES["din"])
    produce_state(s, [user_features("u1", ["i0", "i8"], ["c0", "c0"])], catalog())
    return s


def _raw(channel: grpc.Channel, method: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
    """Sends `payload` as the request bytes of `method`; returns the status and its details."""
    call = channel.unary_unary(f"/{SERVICE_NAME}/{method}")  # no serializers: bytes in, bytes out
    try:
        call(payload, timeout=20)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""


def _until(check: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def test_bytes_that_are_no_request_get_invalid_argument_one_log_line_and_a_count(
        edge: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="streamrank.serve.servicer")
    bad = [("Rank", b"\xff\xff\xff\xff"), ("Retrieve", b"\xff\xff\xff\xff"),
           ("Rank", b"\x12\x02\xc3\x28")]  # user_id (field 2) holding invalid UTF-8
    with running_scorer(edge) as st, st.channel() as channel:
        for method, payload in bad:
            code, detail = _raw(channel, method, payload)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid" in detail, (method, code, detail)
        assert st.stub().Rank(rank_request("u1", ["i0", "i1"]), timeout=10).model_version == 1  # still serving
        text = st.scorer.metrics.text()
    assert 'streamrank_responses_total{code="INVALID_ARGUMENT",method="Rank",model="",version=""} 2.0' in text
    assert 'streamrank_responses_total{code="INVALID_ARGUMENT",method="Retrieve",model="",version=""} 1.0' in text
    lines = [r for r in caplog.records if "INVALID_ARGUMENT" in r.getMessage()]
    assert len(lines) == 3 and not any(r.exc_info for r in lines)  # one line each, no traceback


def test_the_largest_valid_request_fits_the_derived_size_and_one_more_candidate_does_not() -> None:
    limits = Limits(max_candidates=5, max_k=5, max_behaviors=4, max_id_chars=8, max_query_chars=8)
    s = "\U0001f600" * 8  # 8 characters of 4 bytes: the widest id the limits allow
    req = ranking_pb2.RankRequest(request_id=s, user_id=s, query=s, scenario=s, model=s)
    for _ in range(5):
        req.candidates.add(item_id=s, attributes={"category": s, "brand": s, "shop": s, "price": 1e9})
    req.behaviors.item_ids.extend([s] * 4)
    req.behaviors.categories.extend([s] * 4)
    req.behaviors.ts_ms.extend([int(time.time() * 1000)] * 4)
    req.behaviors.types.extend([1] * 4)
    validate_rank(req, limits)  # valid ...
    check_rank_counts(req.SerializeToString(), limits)
    assert req.ByteSize() <= max_request_bytes(limits)  # ... and within the receive size derived from the limits
    req.candidates.add(item_id="x")
    with pytest.raises(ValueError, match="6 candidates"):
        check_rank_counts(req.SerializeToString(), limits)


def test_requests_beyond_the_limits_are_refused_before_decoding_and_counted(edge: Settings) -> None:
    s = edge.with_overrides(serve_max_candidates=50, serve_max_behaviors=20)
    with running_scorer(s) as st, st.channel() as channel:
        servicer = st.scorer.servicer
        assert servicer is not None
        code, detail = _raw(channel, "Rank", rank_request("u1", [f"i{k}" for k in range(51)]).SerializeToString())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "51 candidates (limit 50)" in detail
        many = rank_request("u1", ["i0"])
        many.behaviors.item_ids.extend(["i1"] * 21)
        code, detail = _raw(channel, "Rank", many.SerializeToString())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "21 behaviours (limit 20)" in detail
        big = ranking_pb2.RankRequest(request_id="r" * (servicer.max_request_bytes + 1)).SerializeToString()
        code, detail = _raw(channel, "Rank", big)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "bytes, more than any request" in detail
        huge = b"\x0a" + b"\x00" * (servicer.receive_limit + 16)  # beyond gRPC's own receive limit
        assert _raw(channel, "Rank", huge)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        text = st.scorer.metrics.text()
    assert 'streamrank_responses_total{code="INVALID_ARGUMENT",method="Rank",model="",version=""} 3.0' in text


def test_calls_beyond_the_inflight_budget_are_refused_and_counted(edge: Settings) -> None:
    with running_scorer(edge.with_overrides(serve_max_inflight=1, serve_workers=1)) as st:
        servicer, executor = st.scorer.servicer, st.scorer.executor
        assert servicer is not None and executor is not None
        gate = threading.Event()
        executor.submit(gate.wait, 30)  # the only forward thread is busy: the next call waits in flight
        stub = st.stub()
        first = stub.Rank.future(rank_request("u1", ["i0"]), timeout=30)
        _until(lambda: servicer.admission.calls == 1)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Rank(rank_request("u1", ["i1"]), timeout=10)
        gate.set()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "serve_max_inflight" in (refused.value.details() or "")
        assert len(first.result(30).items) == 1
        assert servicer.admission.calls == 0 and servicer.admission.bytes == 0
        text = st.scorer.metrics.text()
    assert 'streamrank_responses_total{code="RESOURCE_EXHAUSTED",method="Rank",model="",version=""} 1.0' in text
    assert 'streamrank_responses_total{code="OK",method="Rank",model="din",version="1"} 1.0' in text


def test_admission_budgets_calls_and_bytes_but_always_admits_one() -> None:
    a = Admission(max_calls=3, max_bytes=100)
    assert a.enter(500) is None  # idle: the largest request is never refused for its size alone
    assert "serve_max_inflight_bytes" in (a.enter(1) or "")
    a.leave(500)
    assert a.enter(60) is None and a.enter(40) is None
    assert a.enter(1) is not None
    a.leave(40)
    assert a.enter(10) is None and a.enter(10) is None  # 3 calls in flight, 80 bytes
    assert "serve_max_inflight 3" in (a.enter(0) or "")


_BURST = """
import sys, grpc
from streamrank.v1 import ranking_pb2
port, calls, n = map(int, sys.argv[1:4])
req = ranking_pb2.RankRequest(user_id="u1")
for k in range(n):
    req.candidates.add(item_id=f"i{k}")
raw = req.SerializeToString()
channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
rank = channel.unary_unary("/streamrank.v1.RankingService/Rank")
futures = [rank.future(raw, timeout=60) for _ in range(calls)]
codes = []
for f in futures:
    try:
        f.result()
        codes.append("OK")
    except grpc.RpcError as exc:
        codes.append(exc.code().name)
print(len(raw), ",".join(sorted(set(codes))))
"""


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_stays_within_the_configured_bound_under_a_burst_of_oversized_requests(edge: Settings) -> None:
    """40 concurrent Rank calls with 40,000 candidates each (the limit is 1,000), sent from another process:
    the scorer's resident memory grows by less than the bound its settings state (`request_memory_bound`).
    Decoding each request before checking its candidate count, as the scorer used to, held 40 decoded
    requests of about 6x their wire size at once, above the bound."""
    s = edge.with_overrides(max_id_length=16, serve_max_inflight=8, serve_max_inflight_bytes=1 << 20)
    with running_scorer(s) as st:
        bound = st.scorer.request_memory_bound()

        def burst(calls: int) -> tuple[int, str]:
            out = subprocess.run([sys.executable, "-c", _BURST, str(st.port), str(calls), "40000"], check=True,
                                 capture_output=True, text=True, timeout=120).stdout.split()
            return int(out[0]), out[1]

        burst(4)  # warm-up: gRPC's buffers and the allocator's arenas
        peak, stop = [_rss()], threading.Event()
        base = peak[0]

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            size, codes = burst(40)
        finally:
            stop.set()
            sampler.join(5)
        assert st.stub().Rank(rank_request("u1", ["i0"]), timeout=10).items  # still serving
    assert size < st.scorer.servicer.max_request_bytes < 40 * size  # refused by count, not by size
    assert set(codes.split(",")) <= {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
    grown = peak[0] - base
    print(f"burst: {size:,} bytes x 40, resident memory grew {grown / 1e6:.1f} MB, bound {bound / 1e6:.1f} MB")
    assert grown < bound, f"resident memory grew {grown / 1e6:.1f} MB, bound {bound / 1e6:.1f} MB"


def test_health_per_model_and_serving_only_when_every_model_has_a_version(edge: Settings) -> None:
    s = edge.with_overrides(serve_models="din,din2")
    st = ScorerThread(s).start(wait_ready=False)
    try:
        health = health_pb2_grpc.HealthStub(st.channel())

        def status(service: str) -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

        _until(lambda: status(model_health_service("din")) == SERVING)
        assert status("") == status(SERVICE_NAME) == status(model_health_service("din2")) == NOT_SERVING
        assert st.stub().Rank(rank_request("u1", ["i0"], model="din"), timeout=10).model_version == 1
        publish(s, "din2", _FILES["din"])
        _until(lambda: status("") == SERVING)
        assert status(SERVICE_NAME) == status(model_health_service("din2")) == SERVING
    finally:
        st.stop()


def test_metrics_keep_the_live_and_previous_versions_only(edge: Settings) -> None:
    with running_scorer(edge) as st:
        stub = st.stub()
        for version in (2, 3):
            stub.Rank(rank_request("u1", ["i0"]), timeout=10)
            publish(edge, "din", _FILES["din"])
            _until(lambda v=version: st.scorer.watcher.rankers["din"].version == v)
        assert stub.Rank(rank_request("u1", ["i0"]), timeout=10).model_version == 3
        text = st.scorer.metrics.text()
    assert 'code="OK",method="Rank",model="din",version="3"} 1.0' in text
    assert 'code="OK",method="Rank",model="din",version="2"} 1.0' in text  # the version it replaced
    assert 'version="1"' not in text  # retired: an online scorer swaps every minute


def test_a_pinned_version_or_label_is_served_while_a_newer_one_is_live(edge: Settings) -> None:
    from streamrank.registry.store import Registry

    registry = Registry(edge.registry_root(), "din")
    other = trained_files(edge, "din", n=512, seed=1)  # v2: different weights, different scores
    publish(edge, "din", other)
    registry.set_label("stable", 1)
    with running_scorer(edge.with_overrides(serve_version_policy="latest:2")) as st:
        stub = st.stub()
        _until(lambda: sorted(st.scorer.watcher.versions.get("din", {})) == [1, 2])
        live = stub.Rank(rank_request("u1", ["i0", "i1", "i2"]), timeout=10)
        pinned = stub.Rank(rank_request("u1", ["i0", "i1", "i2"], version=1), timeout=10)
        stable = stub.Rank(rank_request("u1", ["i0", "i1", "i2"], version_label="stable"), timeout=10)
        assert (live.model_version, pinned.model_version, stable.model_version) == (2, 1, 1)
        assert [i.score for i in pinned.items] == [i.score for i in stable.items] != [i.score for i in live.items]
        publish(edge, "din", other)  # v3: latest:2 keeps 2 and 3, the label keeps 1
        _until(lambda: sorted(st.scorer.watcher.versions["din"]) == [1, 2, 3])
        registry.set_label("stable", None)
        _until(lambda: sorted(st.scorer.watcher.versions["din"]) == [2, 3])
        for kw, code in (({"version": 1}, grpc.StatusCode.NOT_FOUND), ({"version_label": "stable"},
                         grpc.StatusCode.NOT_FOUND), ({"version": 2, "version_label": "x"},
                         grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as err:
                stub.Rank(rank_request("u1", ["i0"], **kw), timeout=10)
            assert err.value.code() == code, kw
        assert stub.Rank(rank_request("u1", ["i0"], version=2), timeout=10).model_version == 2


def test_labels_are_kept_by_pruning_and_checked(edge: Settings) -> None:
    from streamrank.registry.store import Registry, RegistryError

    registry = Registry(edge.registry_root(), "din")
    for _ in range(3):
        publish(edge, "din", _FILES["din"])  # v2..v4, v4 live
    registry.set_label("canary", 2)
    assert registry.labels() == {"canary": 2}
    assert registry.prune(keep=0) == [1, 3]  # the live v4 and the labelled v2 stay
    with pytest.raises(RegistryError, match="invalid label"):
        registry.set_label("Bad Label", 2)
    with pytest.raises(RegistryError, match="does not exist"):
        registry.set_label("canary", 9)
    with pytest.raises(RegistryError, match="no label"):
        registry.set_label("stable", None)


def test_registry_label_command(edge: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    from streamrank.cli import main
    from streamrank.registry.store import Registry

    publish(edge, "din", _FILES["din"])
    where = ["--model", "din", "--data-dir", edge.data_dir]
    assert main(["registry", "label", "--label", "stable", "--version", "1", *where]) == 0
    assert Registry(edge.registry_root(), "din").labels() == {"stable": 1}
    assert main(["registry", "list", *where]) == 0
    assert "[stable]" in next(line for line in capsys.readouterr().out.splitlines() if " v1 " in line)
    assert main(["registry", "label", "--label", "stable", *where]) == 0  # no --version: removed
    assert Registry(edge.registry_root(), "din").labels() == {}
    assert main(["registry", "label", "--version", "1", *where]) == 2  # no --label: one line, exit 2
    assert main(["registry", "label", "--label", "stable", "--version", "7", *where]) == 1
    assert "does not exist" in capsys.readouterr().err
