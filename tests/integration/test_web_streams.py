"""Status streams on the real web server: gunicorn as the README starts it, PostgreSQL, a job that
changes while a client watches its event stream, and a shutdown that does not wait for watchers."""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import requests

from db.models import Job
from tests.helpers.services import free_port
from tests.integration.conftest import worker_env
from tests.integration.worker_process import VENV_BIN

pytestmark = pytest.mark.integration


def _start_gunicorn(settings, tmp_path, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(tmp_path / "web.log", "w")
    process = subprocess.Popen([str(VENV_BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "1", *options,
                                "web:create_app()"], cwd=tmp_path, env=worker_env(settings, SECRET_KEY="streams"),
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}/login", timeout=10).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not start:\n{(tmp_path / 'web.log').read_text()[-3000:]}")
        time.sleep(0.2)


def _arrange(factory) -> tuple[int, str]:
    from web.auth import get_or_create_user, issue_token

    with factory() as session:
        token = issue_token(session, get_or_create_user(session, "watcher", "viewer"))
        job = Job(name="watched", sealed=True, status="running", total=3, done=1)
        session.add(job)
        session.commit()
        return job.id, token


def _statuses(lines) -> "iter[dict]":
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line[6:])


def test_a_stream_follows_the_job_and_a_stop_does_not_wait_for_it(service, tmp_path):
    settings, factory = service
    job_id, token = _arrange(factory)
    process, url = _start_gunicorn(settings, tmp_path, "-c", "python:web.gunicorn_config", "--graceful-timeout", "30")
    try:
        response = requests.get(f"{url}/api/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {token}"},
                                stream=True, timeout=(5, 30))
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        statuses = _statuses(response.iter_lines(decode_unicode=True))
        assert next(statuses)["done"] == 1
        with factory() as session:
            session.get(Job, job_id).done = 2
            session.commit()
        assert next(statuses)["done"] == 2  # pushed: the client asked nothing more

        # Stopping the server while the page still watches: gunicorn waits up to its graceful
        # timeout (30 s here) for requests in flight; the stream ends at once instead.
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=25)
        assert time.monotonic() - stopped < 5.0
        assert list(statuses) == []  # the stream ended cleanly, nothing half-sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_sync_worker_refuses_streams_so_a_watcher_cannot_block_it(service, tmp_path):
    """Plain `gunicorn 'web:create_app()'` runs one request at a time: a stream would block everyone."""
    settings, factory = service
    job_id, token = _arrange(factory)
    process, url = _start_gunicorn(settings, tmp_path)
    try:
        answer = requests.get(f"{url}/api/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {token}"},
                              timeout=10)
        assert answer.status_code == 503 and answer.json()["error"] == "streams_unavailable"
        assert requests.get(f"{url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"},
                            timeout=10).json()["done"] == 1
    finally:
        process.terminate()
        process.wait(15)
