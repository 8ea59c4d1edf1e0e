"""`make run`'s runner for real: SQLite in a temp DATA_DIR, the embedded broker, SIGINT, no orphans."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts.local_env import free_port
from scripts.procs import group_alive

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def get_json(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def post_files(url: str, token: str, files: dict[str, bytes]) -> dict:
    boundary = "----opsboundary"
    body = io.BytesIO()
    for name, data in files.items():
        body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                   "Content-Type: application/octet-stream\r\n\r\n".encode())
        body.write(data + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(url, data=body.getvalue(), method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        return json.loads(response.read())


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(48, 48), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture()
def runner(tmp_path):
    data_dir = tmp_path / "var"
    ready = tmp_path / "ready.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "SECRET_KEY", "TRAINING_DATA_DIR", "APP_ENV")}
    env["RETRAIN_SCHEDULE"] = ""
    command = [sys.executable, str(REPO / "scripts" / "run_local.py"), "--data-dir", str(data_dir),
               "--port", str(free_port()), "--broker", "filesystem", "--web-server", "gunicorn",
               "--web-workers", "1", "--ready-file", str(ready), "--stop-grace", "10"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 45
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if not ready.exists():
            process.kill()
            pytest.fail(f"runner did not become ready:\n{process.communicate(timeout=10)[0]}")
        yield process, json.loads(ready.read_text()), data_dir
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_runner_serves_waits_for_a_model_and_stops_cleanly(runner):
    process, info, data_dir = runner
    assert info["broker"] == "filesystem"
    # Training has its own worker, so a retraining run never blocks inference.
    assert set(info["pids"]) == {"web", "worker", "worker-training", "beat"}
    status, health = get_json(f"{info['url']}/healthz")
    assert status == 200 and health["database"] == "ok"
    assert (data_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    assert (data_dir / "admin_token").read_text().strip() == info["token"]
    # A second shell's CLI commands must reach the same embedded broker and data.
    local_env = (data_dir / "local.env").read_text()
    assert "export BROKER_URL=filesystem://" in local_env and f"export DATA_DIR={data_dir}" in local_env

    # No model version yet: an upload waits as queued and says why.
    job = post_files(f"{info['url']}/api/v1/jobs", info["token"], {"a.png": png_bytes(1), "b.png": png_bytes(2)})
    status, body = get_json(f"{info['url']}{job['status_url']}", info["token"])
    assert body["status"] == "queued" and body["total"] == 2
    assert "model" in body["detail"]

    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=40)[0]
    assert process.returncode == 0, output
    assert "stopped" in output
    for name, pgid in info["pids"].items():
        assert not group_alive(pgid), f"{name} (process group {pgid}) outlived the runner"
