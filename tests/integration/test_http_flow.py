"""End to end through the HTTP API: upload (one request and several) → real worker → results → CSV."""
from __future__ import annotations

import csv
import io

import pytest

from tasks.versions import activate_version, register_bundle
from tests.integration.worker_process import wait_for
from tests.workers.jobdata import good_paths, scan_files

pytestmark = pytest.mark.integration
MODELS = ("resnet50", "vgg16", "custom_cnn", "svm", "random_forest")


@pytest.fixture()
def api(service, tiny_bundle):
    """(test client, auth headers) of a web app on the integration database and broker."""
    from web import create_app
    from web.auth import get_or_create_user, issue_token

    settings, factory = service
    with factory() as session:
        activate_version(session, register_bundle(session, tiny_bundle))
        session.commit()
    app = create_app({"env": "test", "database_url": settings.database_url, "redis_url": settings.redis_url,
                      "broker_key_prefix": settings.broker_key_prefix,
                      "data_dir": settings.data_dir, "inference_batch_size": settings.inference_batch_size,
                      "log_level": "WARNING"})
    with factory() as session:
        token = issue_token(session, get_or_create_user(session, "itest", "admin"))
        session.commit()
    yield app.test_client(), {"Authorization": f"Bearer {token}"}
    app.extensions["mri"].engine.dispose()


def _form(files: dict[str, bytes]) -> dict:
    return {"files": [(io.BytesIO(data), path.rsplit("/", 1)[-1]) for path, data in files.items()],
            "paths": list(files)}


def _wait_done(client, headers, job_id, worker) -> dict:
    state = {}

    def done() -> bool:
        response = client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert response.status_code == 200
        state.update(response.get_json())
        return state["status"] == "done"

    wait_for(done, 180, f"job {job_id} to finish", worker)
    return state


def test_upload_poll_results_csv(api, start_worker):
    client, headers = api
    worker = start_worker()
    files = scan_files(good=5)
    response = client.post("/api/v1/jobs", data=_form(files), headers=headers,
                           content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    status = _wait_done(client, headers, job_id, worker)
    assert (status["total"], status["done"], status["failed"]) == (7, 5, 2)
    assert status["finished"]
    results = client.get(f"/api/v1/jobs/{job_id}/results", headers=headers).get_json()
    by_path = {scan["path"]: scan for scan in results["scans"]}
    assert set(by_path) == set(files)
    for path in good_paths(files):
        scan = by_path[path]
        assert scan["status"] == "classified" and set(scan["predictions"]) == set(MODELS)
        assert 0 <= scan["ensemble"]["agreement"] <= 5
        assert abs(sum(scan["ensemble"]["probabilities"].values()) - 1) < 1e-3
    for path in ("bad/truncated.jpg", "bad/notes.jpg"):
        assert by_path[path]["status"] == "failed" and by_path[path]["error"]
    exported = client.get(f"/api/v1/results?job={job_id}&format=csv", headers=headers)
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert sorted(r["path"] for r in rows) == good_paths(files)
    ensemble = {s["path"]: s["ensemble"]["label"] for s in results["scans"] if s["status"] == "classified"}
    assert all(r["label"] == ensemble[r["path"]] for r in rows)


def test_multi_request_upload_and_reupload_reuse(api, start_worker):
    client, headers = api
    worker = start_worker()
    files = scan_files(good=4, seed=5)
    items = list(files.items())
    first = client.post("/api/v1/jobs?open=1", data=_form(dict(items[:3])), headers=headers,
                        content_type="multipart/form-data")
    assert first.status_code == 202
    job_id = first.get_json()["id"]
    more = client.post(f"/api/v1/jobs/{job_id}/files", data=_form(dict(items[3:])), headers=headers,
                       content_type="multipart/form-data")
    assert more.status_code == 202, more.get_json()
    assert client.post(f"/api/v1/jobs/{job_id}/close", headers=headers).status_code == 200
    status = _wait_done(client, headers, job_id, worker)
    assert (status["total"], status["done"], status["failed"]) == (6, 4, 2)
    again = client.post("/api/v1/jobs", data=_form(files), headers=headers, content_type="multipart/form-data")
    second_id = again.get_json()["id"]
    status = _wait_done(client, headers, second_id, worker)
    assert (status["done"], status["failed"]) == (4, 2)
    results = client.get(f"/api/v1/jobs/{second_id}/results", headers=headers).get_json()
    first_results = client.get(f"/api/v1/jobs/{job_id}/results", headers=headers).get_json()
    before = {s["path"]: s["ensemble"] for s in first_results["scans"] if s["status"] == "classified"}
    for scan in results["scans"]:
        if scan["status"] == "classified":
            assert scan["ensemble"]["label"] == before[scan["path"]]["label"]
    with api_session(client) as session:
        from db.models import Job
        assert session.get(Job, second_id).reused == 4


def api_session(client):
    """A DB session on the app behind a test client."""
    return client.application.extensions["mri"].session_factory()
