"""`streamrank serve`: the grpc.aio scorer with its replica, model watcher, health, reflection and metrics.

Start-up order: open the replica (serving can start from what it holds after a restart) and start its
reader, load the live versions, start the gRPC server, then mark health SERVING once every configured model
has a servable version and the replica has caught up once; each model also has a health service of its
own (`model_health_service`), SERVING while it has a version. Shutdown marks health NOT_SERVING first
(load balancers stop sending), lets in-flight calls finish within the grace period, then stops the watcher
and the replica.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from streamrank.config import Settings
from streamrank.registry.store import read_signing_keys
from streamrank.runtime import tune_allocator
from streamrank.serve.admission import memory_bound
from streamrank.serve.metrics import ScorerMetrics
from streamrank.serve.models import ModelWatcher
from streamrank.serve.replica import FeatureReplica
from streamrank.serve.servicer import RankingServicer, served_models
from streamrank.serve.tls import server_credentials
from streamrank.serve.versions import VersionPolicy
from streamrank.v1 import ranking_pb2

log = logging.getLogger(__name__)
SERVICE_NAME = ranking_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name
_MAX_SEND = 8 * 1024 * 1024  # a response is at most serve_max_candidates / serve_max_k scored ids
_BACKSTOP_HEADROOM = 64


def model_health_service(name: str) -> str:
    """The health-check service name of one served model, e.g. "streamrank.v1.RankingService/din"."""
    return f"{SERVICE_NAME}/{name}"


def _status(ok: bool) -> int:
    return health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING


class Scorer:
    """One scorer process' parts, started and stopped together."""

    def __init__(self, settings: Settings, replica_dir: str | Path | None = None) -> None:
        self.settings = settings
        self.replica_dir = Path(replica_dir) if replica_dir else Path(settings.data_dir) / "scorer" / "replica"
        self.metrics = ScorerMetrics()
        self.replica = FeatureReplica(settings, self.replica_dir)
        self.watcher = ModelWatcher(
            str(settings.registry_root()), served_models(settings), settings.serve_retrieval or None,
            settings.serve_poll_s, on_change=self._on_change, on_failure=self._on_failure,
            signing_keys=read_signing_keys(settings.registry_signing_key_file) if settings.registry_signing_key_file
            else (), policy=VersionPolicy.parse(settings.serve_version_policy))
        # OpenMP thread counts are per thread: each forward thread sets its own (torch's default is all cores,
        # whose spinning threads then fight the gRPC and replica threads for the CPU).
        self.executor = (ThreadPoolExecutor(settings.serve_workers, thread_name_prefix="score",
                                            initializer=torch.set_num_threads,
                                            initargs=(settings.serve_torch_threads,))
                         if settings.serve_workers else None)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port = 0
        self._status_task: asyncio.Task[None] | None = None
        self._live: dict[str, int] = {}
        self.servicer: RankingServicer | None = None

    def _on_change(self, name: str, version: int) -> None:
        self.metrics.swaps.labels(name).inc()
        # the series of the new version and the one it replaces stay; older ones are dropped, so an
        # online-learning scorer that swaps every minute does not grow its metrics without bound
        self.metrics.retire_versions(name, keep={str(version), str(self._live.get(name, ""))})
        self._live[name] = version
        retriever = self.watcher.retriever
        if name == self.watcher.retriever_name and retriever is not None:
            self.metrics.index_version.labels(name).set(version)
            self.metrics.index_recall.labels(name).set(retriever.index.meta.recall_at_k)
        else:
            self.metrics.model_version.labels(name).set(version)

    def _on_failure(self, name: str, version: int, reason: str) -> None:
        self.metrics.load_failures.labels(name).inc()

    async def start(self) -> int:
        """Starts everything; returns the bound gRPC port (serve_port 0 picks a free one)."""
        s = self.settings
        tune_allocator()
        torch.set_num_threads(s.serve_torch_threads)
        self.replica.start()
        await asyncio.get_running_loop().run_in_executor(None, self.watcher.refresh)
        self.watcher.start()
        servicer = RankingServicer(s, self.replica, self.watcher, self.metrics, self.executor)
        server = grpc.aio.server(
            # a backstop above the servicer's own (counted) limit, with room for health checks and refusals
            maximum_concurrent_rpcs=s.serve_max_inflight + _BACKSTOP_HEADROOM,
            options=[("grpc.max_receive_message_length", servicer.receive_limit),
                     ("grpc.max_send_message_length", _MAX_SEND),
                     ("grpc.so_reuseport", 0)])  # a second scorer on a busy port fails instead of sharing it
        server.add_generic_rpc_handlers((servicer.rpc_handlers(SERVICE_NAME),))
        self.servicer = servicer
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server)
        credentials = server_credentials(s)
        address = f"{s.serve_host}:{s.serve_port}"
        try:
            self.port = (server.add_secure_port(address, credentials) if credentials is not None
                         else server.add_insecure_port(address))
        except RuntimeError as exc:  # grpc raises RuntimeError("Failed to bind ...")
            raise OSError(f"cannot listen on {address} (gRPC): is another scorer using the port? ({exc})") from exc
        if self.port == 0:
            raise OSError(f"cannot listen on {address} (gRPC): is another scorer using the port?")
        await server.start()
        self.server = server
        if s.serve_metrics_port:
            try:
                self.metrics_port = self.metrics.serve_http(s.serve_host, s.serve_metrics_port,
                                                            s.serve_tls_cert_file, s.serve_tls_key_file)
            except OSError as exc:
                await server.stop(0)
                raise OSError(f"cannot serve metrics on {s.serve_host}:{s.serve_metrics_port}: "
                              f"{exc.strerror or exc} (serve_metrics_port / --metrics-port; 0 turns it off)") from exc
        await self.update_health()
        self._status_task = asyncio.create_task(self._status_loop())
        log.info("scorer on %s:%d (%s; metrics :%d), models %s, retrieval %r", s.serve_host, self.port,
                 "TLS" + (", client certificates required" if s.serve_tls_client_ca_file else "")
                 if credentials is not None else "plaintext",
                 self.metrics_port, self.watcher.ranker_names, self.watcher.retriever_name)
        return self.port

    def request_memory_bound(self) -> int:
        """The most bytes requests can hold in this scorer at once (`admission.memory_bound`), from its
        settings: what the scorer's memory grows by, at most, under any burst of requests."""
        s = self.settings
        limit = RankingServicer.receive_limit_for(s)
        return memory_bound(s.serve_max_inflight, s.serve_max_inflight_bytes, limit,
                            s.serve_max_inflight + _BACKSTOP_HEADROOM)

    def model_status(self) -> dict[str, bool]:
        """Whether each configured model (ranking models, then the retrieval pair if set) has a servable
        version loaded."""
        status = {name: name in self.watcher.rankers for name in self.watcher.ranker_names}
        if self.watcher.retriever_name:
            status[self.watcher.retriever_name] = self.watcher.retriever is not None
        return status

    def ready(self) -> bool:
        """Whether every configured model has a servable version and the replica has caught up once."""
        return (all(self.model_status().values()) and self.replica.status().caught_up
                and self.replica.error is None)

    async def update_health(self) -> None:
        """Sets the health statuses from ready() (the server, "" and the service name) and per model
        (`model_health_service(name)`: its own version and the replica), and copies the replica's lag into
        the metrics."""
        replica = self.replica.status()
        replica_ok = replica.caught_up and self.replica.error is None
        models = self.model_status()
        for name, loaded in models.items():
            await self.health.set(model_health_service(name), _status(loaded and replica_ok))
        overall = _status(all(models.values()) and replica_ok)
        await self.health.set("", overall)
        await self.health.set(SERVICE_NAME, overall)
        self.metrics.update_replica(replica)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                await self.update_health()
            except Exception:
                log.exception("health update failed")

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, finish in-flight calls (up to grace_s), stop the parts."""
        grace = self.settings.serve_grace_s if grace_s is None else grace_s
        if self._status_task is not None:
            self._status_task.cancel()
            self._status_task = None
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
        self.watcher.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.metrics.close()
        self.replica.close()


async def serve_forever(settings: Settings) -> None:
    """Runs a scorer until SIGTERM or SIGINT, then shuts it down gracefully."""
    scorer = Scorer(settings)
    await scorer.start()
    print(f"scorer listening on {settings.serve_host}:{scorer.port}"
          + (f", metrics on :{scorer.metrics_port}/metrics" if scorer.metrics_port else ""), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("scorer stopping (finishing in-flight calls)", flush=True)
    await scorer.stop()
