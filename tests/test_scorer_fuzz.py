"""Fuzzing both RPCs with malformed and extreme inputs: only OK or INVALID_ARGUMENT, and the server stays up."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from streamrank.config import Settings, load_settings
from streamrank.v1 import features_pb2, ranking_pb2
from tests.servetools import (
    ScorerThread,
    catalog,
    produce_state,
    publish,
    publish_retrieval,
    rank_request,
    trained_files,
    user_features,
)

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
_STUB: list = []  # one stub (one channel) for every fuzzed call
SEEN: dict[str, set[grpc.StatusCode]] = {"Rank": set(), "Retrieve": set()}
ids = st.one_of(st.sampled_from(["u1", "i1", "i3", "", "web"]), st.text(max_size=300))
floats = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def candidates(draw: st.DrawFn) -> list[ranking_pb2.CandidateItem]:
    out = []
    for item_id in draw(st.lists(ids, max_size=25)):
        cand = ranking_pb2.CandidateItem(item_id=item_id)
        if draw(st.booleans()):
            a = cand.attributes
            a.category = draw(ids)
            a.brand = draw(st.text(max_size=20))
            if draw(st.booleans()):
                a.price = draw(floats)
        out.append(cand)
    copies = draw(st.sampled_from([0, 0, 0, 990, 1001, 1500]))  # around the candidate limit
    out.extend(ranking_pb2.CandidateItem(item_id=f"c{k}") for k in range(copies))
    return out


@st.composite
def behaviours(draw: st.DrawFn) -> features_pb2.BehaviorSequence | None:
    if draw(st.booleans()):
        return None
    n = draw(st.integers(0, 12))
    seq = features_pb2.BehaviorSequence(item_ids=[draw(ids) for _ in range(n)])
    if draw(st.booleans()):
        seq.types.extend(draw(st.lists(st.integers(-3, 9), min_size=n, max_size=n + draw(st.integers(0, 1)))))
    if draw(st.booleans()):
        seq.ts_ms.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)))
    if draw(st.booleans()):
        seq.categories.extend(draw(st.lists(st.text(max_size=8), min_size=0, max_size=n)))
    return seq


@pytest.fixture(scope="module")
def fuzz_scorer(broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScorerThread]:
    base = tmp_path_factory.mktemp("fuzz")
    settings: Settings = load_settings(
        bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"fuzz-{base.name}.", data_dir=str(base / "data"),
        partitions=2, serve_port=0, serve_metrics_port=0, serve_models="din", serve_retrieval="retrieval",
        serve_poll_s=0.5, serve_batch_wait_ms=1.0)  # the batched Rank path faces the fuzz too
    publish(settings, "din", trained_files(settings, "din", n=1024))
    publish_retrieval(settings)
    produce_state(settings, [user_features("u1", ["i0", "i8"], ["c0", "c0"])], catalog())
    st_ = ScorerThread(settings).start()
    _STUB[:] = [st_.stub()]
    yield st_
    st_.stop()


def _code(method: str, request) -> grpc.StatusCode:
    call = getattr(_STUB[0], method)
    try:
        call(request, timeout=30)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
    SEEN[method].add(code)
    return code


@hyp_settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(user=ids, scenario=ids, query=st.text(max_size=1100), model=st.sampled_from(["", "din", "nope"]),
       cands=candidates(), seq=behaviours(), request_id=ids)
def test_rank_fuzz(fuzz_scorer: ScorerThread, user: str, scenario: str, query: str, model: str,
                   cands: list, seq: features_pb2.BehaviorSequence | None, request_id: str) -> None:
    req = ranking_pb2.RankRequest(user_id=user, scenario=scenario, query=query, model=model,
                                  request_id=request_id, candidates=cands)
    if seq is not None:
        req.behaviors.CopyFrom(seq)
    assert _code("Rank", req) in ALLOWED


@hyp_settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(user=ids, k=st.one_of(st.integers(-5, 1005), st.integers(-(2**31), 2**31 - 1)), exclude=st.booleans(),
       scenario=ids, query=st.text(max_size=1100))
def test_retrieve_fuzz(fuzz_scorer: ScorerThread, user: str, k: int, exclude: bool, scenario: str,
                       query: str) -> None:
    req = ranking_pb2.RetrieveRequest(user_id=user, k=k, exclude_seen=exclude, scenario=scenario, query=query)
    assert _code("Retrieve", req) in ALLOWED


def test_server_still_up_after_fuzzing(fuzz_scorer: ScorerThread) -> None:
    stub = fuzz_scorer.stub()
    assert len(stub.Rank(rank_request("u1", ["i1", "i2"]), timeout=10).items) == 2
    assert len(stub.Retrieve(ranking_pb2.RetrieveRequest(user_id="u1", k=5), timeout=10).items) == 5
    assert fuzz_scorer.scorer.ready()
    errors = sum(s.value for m in fuzz_scorer.scorer.metrics.responses.collect() for s in m.samples
                 if s.name.endswith("_total") and s.labels["code"] == "INTERNAL")
    assert errors == 0
    # The fuzzers reached both outcomes of both RPCs (valid requests served, invalid ones refused).
    assert SEEN["Rank"] == ALLOWED and SEEN["Retrieve"] == ALLOWED, SEEN
