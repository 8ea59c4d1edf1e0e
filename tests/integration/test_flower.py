"""Flower, as an operator runs it, sees the service's tasks (named, with job and scan ids) behind auth."""
from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from db.models import Job
from tasks.dispatch import dispatch_job
from tasks.versions import activate_version, register_bundle
from tests.helpers.services import free_port
from tests.integration.conftest import worker_env
from tests.integration.worker_process import REPO, VENV_BIN, wait_for
from tests.workers.jobdata import make_job, scan_files

pytestmark = pytest.mark.integration


def _get(url: str, auth: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_flower_shows_classify_tasks_with_their_ids_and_refuses_without_auth(service, start_worker,
                                                                             tiny_bundle, tmp_path):
    settings, factory = service
    with factory() as session:
        version = register_bundle(session, tiny_bundle)
        activate_version(session, version)
        session.commit()
        job = make_job(session, settings, scan_files(good=2))
        job_id, scan_ids = job.id, sorted(s.id for s in job.scans)
    port = free_port()
    log = open(tmp_path / "flower.log", "w")
    flower = subprocess.Popen([str(VENV_BIN / "celery"), "-A", "workers", "flower", f"--port={port}",
                               "--address=127.0.0.1"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env=worker_env(settings, FLOWER_BASIC_AUTH="ops:s3cret"))
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return _get(f"{base}/api/workers", "ops:s3cret")[0] == 200
            except OSError:
                return False

        wait_for(up, 60, "Flower to answer")
        worker = start_worker()
        dispatch_job(factory, job_id, settings)

        def done() -> bool:
            with factory() as session:
                return session.get(Job, job_id).status == "done"

        wait_for(done, 120, "the job", worker)
        assert _get(f"{base}/api/tasks", None)[0] == 401
        assert _get(f"{base}/api/tasks", "ops:wrong")[0] == 401
        deadline, tasks = time.monotonic() + 20, {}
        while time.monotonic() < deadline:
            status, body = _get(f"{base}/api/tasks", "ops:s3cret")
            tasks = json.loads(body) if status == 200 else {}
            if any(t.get("state") == "SUCCESS" and t.get("name") == "tasks.classify_batch" for t in tasks.values()):
                break
            time.sleep(0.5)
        classify = [t for t in tasks.values() if t.get("name") == "tasks.classify_batch"]
        assert classify and classify[0]["state"] == "SUCCESS", tasks
        # The arguments say what the task works on: scan ids, the version and the job; no patient data.
        assert str(scan_ids[0]) in classify[0]["args"] and f"'jobs': [{job_id}]" in classify[0]["kwargs"]
    finally:
        flower.terminate()
        flower.wait(timeout=15)
        log.close()
