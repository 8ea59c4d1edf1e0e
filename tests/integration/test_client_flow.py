"""`mri-classify` against the real service: gunicorn, a Celery worker with a real (tiny) bundle,
PostgreSQL and Redis. A study folder's upload is cut off by the network, resumed by running the
same command again (only the missing files are sent), followed to the end with --wait, and its
results exported as CSV, per job and filtered."""
from __future__ import annotations

import csv
import subprocess
import time

import pytest
import requests

from tests.client.client_helpers import Proxy
from tests.helpers.services import free_port
from tests.integration.conftest import worker_env
from tests.integration.worker_process import VENV_BIN, clean_env
from tests.workers.jobdata import activate_bundle, scan_files

pytestmark = pytest.mark.integration


@pytest.fixture()
def web(service, tmp_path):
    """gunicorn serving the service's web app, started as a user would; its base URL."""
    settings, _ = service
    port = free_port()
    log = open(tmp_path / "web.log", "w")
    process = subprocess.Popen([str(VENV_BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "1",
                                "web:create_app()"], cwd=tmp_path, env=worker_env(settings, SECRET_KEY="cli-flow"),
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:  # the login page: public, and it asks neither the database nor the workers
            if requests.get(f"{url}/login", timeout=10).status_code == 200:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not start:\n{(tmp_path / 'web.log').read_text()[-3000:]}")
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(15)
    log.close()


def mri(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The installed console script, in a plain environment."""
    return subprocess.run([str(VENV_BIN / "mri-classify"), *argv], capture_output=True, text=True, timeout=240,
                          env=clean_env(**env), check=False)


def test_client_resumes_a_cut_upload_waits_for_the_job_and_exports_results(service, start_worker, tiny_bundle,
                                                                           web, tmp_path):
    settings, factory = service
    activate_bundle(factory, tiny_bundle)
    start_worker()
    from web.auth import get_or_create_user, issue_token

    with factory() as session:
        token = issue_token(session, get_or_create_user(session, "cli", "uploader"))
        session.commit()
    folder = tmp_path / "patient-3"
    for path, data in scan_files(good=10, seed=3).items():  # 10 slices plus a truncated JPEG and a text file
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    proxy = Proxy(web)
    environ = {"MRI_URL": proxy.url, "MRI_TOKEN": token, "HOME": str(tmp_path / "home")}
    try:
        proxy.uploads_allowed = 1
        cut = mri("--retries", "1", "--backoff", "0.05", "submit", str(folder), "--part-files", "4", env=environ)
        assert cut.returncode == 6, cut.stderr
        assert proxy.files_sent() == 4
        proxy.uploads_allowed, proxy.requests = None, []
        done = mri("submit", str(folder), "--part-files", "4", "--wait", env=environ)
        assert done.returncode == 0, done.stderr
        assert proxy.files_sent() == 8
    finally:
        proxy.stop()
    job_url = done.stdout.strip().splitlines()[0]
    job_id = job_url.rsplit("/", 1)[1]
    assert job_url == f"{proxy.url}/jobs/{job_id}"
    assert f"job {job_id} done: 10 classified, 2 failed of 12" in done.stderr

    environ["MRI_URL"] = web
    status = mri("status", job_id, env=environ)
    assert status.returncode == 0 and "scans: 12 total, 10 classified, 2 failed, 0 waiting" in status.stdout
    per_job = tmp_path / "job.csv"
    assert mri("results", job_id, "--csv", str(per_job), env=environ).returncode == 0
    rows = list(csv.DictReader(per_job.open()))
    assert len(rows) == 12 and {r["study"] for r in rows} == {"patient-3"}
    classified = {r["path"]: r["label"] for r in rows if r["status"] == "classified"}
    assert len(classified) == 10 and set(classified.values()) <= {"glioma", "meningioma", "notumor", "pituitary"}
    failed = [r for r in rows if r["status"] == "failed"]
    assert sorted(r["path"] for r in failed) == ["patient-3/bad/notes.jpg", "patient-3/bad/truncated.jpg"]
    assert all(r["error"] for r in failed)
    filtered = tmp_path / "filtered.csv"
    exported = mri("results", job_id, "--min-confidence", "0", "--csv", str(filtered), env=environ)
    assert exported.returncode == 0, exported.stderr
    assert {r["path"]: r["label"] for r in csv.DictReader(filtered.open())} == classified
