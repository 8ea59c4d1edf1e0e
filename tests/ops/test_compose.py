"""docker-compose.yml and the Dockerfile: validated by Compose itself where it is installed."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICES = {"web", "worker-gpu", "worker-cpu", "worker-training", "beat", "redis", "postgres"}
SECRETS = {"SECRET_KEY": "test-secret", "POSTGRES_PASSWORD": "test-password"}


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) if it works, else `docker-compose` (v1), else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def run_compose(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed "
                    "(apt-get install docker-compose); the YAML checks below still ran")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env.update(env_extra or {})
    return subprocess.run([*command, "-f", str(COMPOSE_FILE), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_validates_with_compose_itself():
    result = run_compose("--profile", "gpu", "--profile", "monitoring", "config", env_extra=SECRETS)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert SERVICES | {"flower"} <= set(resolved["services"])
    assert resolved["services"]["web"]["environment"]["SECRET_KEY"] == "test-secret"


def test_compose_refuses_to_run_without_secret_key():
    result = run_compose("config", env_extra={"POSTGRES_PASSWORD": "x"})
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_services_and_profiles(compose):
    services = compose["services"]
    assert SERVICES <= set(services)
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert all("profiles" not in services[name] for name in SERVICES - {"worker-gpu"})
    assert services["flower"]["profiles"] == ["monitoring"]


def test_flower_is_optional_behind_basic_auth_on_loopback(compose):
    flower = compose["services"]["flower"]
    command = " ".join(flower["command"])
    assert "celery -A workers flower" in command
    assert 'test -n "$$FLOWER_BASIC_AUTH"' in command and "exit 1" in command
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH")
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


def test_gpu_worker_reserves_nvidia_devices(compose):
    gpu = compose["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "INFERENCE_PRECISION" in gpu["environment"]
    assert "scripts/gpu_workers.py" in gpu["command"]


def test_queues_per_worker(compose):
    def queues(name: str) -> str:
        command = compose["services"][name]["command"]
        return command[command.index("-Q") + 1]

    assert queues("worker-cpu") == "inference,default"
    assert queues("worker-training") == "training"
    assert "--pool" in compose["services"]["worker-training"]["command"]
    beat = compose["services"]["beat"]["command"]
    assert beat[:4] == ["celery", "-A", "workers", "beat"]


def test_health_checks_and_start_order(compose):
    services = compose["services"]
    for name in ("redis", "postgres", "web"):
        assert "healthcheck" in services[name], name
    for name in ("web", "worker-cpu", "worker-gpu", "worker-training", "beat"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["flask", "--app", "web", "db", "upgrade"]


def test_volumes_and_one_image(compose):
    services = compose["services"]
    app_roles = ("web", "worker-cpu", "worker-gpu", "worker-training", "beat", "migrate")
    assert len({services[name]["image"] for name in app_roles}) == 1
    assert all(services[name]["build"]["context"] == "." for name in app_roles)
    assert {"appdata", "pgdata", "redisdata"} <= set(compose["volumes"])
    assert any(v.startswith("pgdata:") for v in services["postgres"]["volumes"])


def test_no_secrets_in_the_file():
    text = COMPOSE_FILE.read_text()
    assert "${SECRET_KEY:?" in text and "${POSTGRES_PASSWORD:?" in text
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        for value in re.findall(rf"^\s*{name}:\s*(\S+)", text, re.M):
            assert value.startswith("${") and ":?" in value, f"{name} must come from the environment"


def test_dockerfile_one_slim_image_non_root():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "pip install -r requirements.txt" in text
    pinned = re.search(r"^tensorflow(?:-cpu)?==([\d.]+)", (REPO / "requirements.txt").read_text(), re.M)
    assert pinned and f"TENSORFLOW_VERSION={pinned.group(1)}" in text, "keep the GPU build's TensorFlow in step"


def test_dockerignore_keeps_local_state_out():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var"} <= ignored
