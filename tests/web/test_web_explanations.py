"""GET /api/v1/scans/<id>/explanation: queued -> the worker's task in process -> the PNG overlay; a cache hit
queues nothing; errors; a login is needed."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from db.models import Scan
from tasks import explain, runtime
from tests.workers.jobdata import make_job, scan_files
from web_helpers import queued_messages


@pytest.fixture()
def classified(app, tiny_bundle, monkeypatch):
    """(scan id, version id) of one 48 px scan classified by the tiny bundle (the worker's own code);
    this process then runs tasks as a worker of the app's settings."""
    from tasks.classify import classify_scans
    from tasks.versions import activate_version, register_bundle

    state = app.extensions["mri"]
    with state.session_factory() as s:
        version_id = activate_version(s, register_bundle(s, tiny_bundle)).id
        s.commit()
        scan_id = make_job(s, state.settings, {"study/a.png": scan_files(good=2)["study1/slice_001.png"]}).scans[0].id
    assert classify_scans(state.session_factory, state.settings, [scan_id], version_id).classified == [scan_id]
    monkeypatch.setattr(runtime, "_settings", state.settings)
    monkeypatch.setattr(runtime, "_db", None)
    yield scan_id, version_id
    runtime.shutdown()


def test_queued_then_computed_then_served_from_the_cache(client, auth, broker, classified):
    scan_id, version_id = classified
    url = f"/api/v1/scans/{scan_id}/explanation?model=custom_cnn"
    first = client.get(url, headers=auth("viewer"))
    assert first.status_code == 202 and first.headers["Retry-After"]
    assert first.get_json() == {"status": "queued", "scan": scan_id, "model": "custom_cnn",
                                "model_version": version_id}
    assert first.headers["Location"].endswith(f"/api/v1/scans/{scan_id}/explanation?model=custom_cnn")
    assert client.get(url, headers=auth("viewer")).status_code == 202  # still pending: not queued again
    messages = queued_messages(broker, "inference")
    assert [(m["task"], m["args"]) for m in messages] == [("tasks.explain_scan", [scan_id, version_id, "custom_cnn"])]

    assert explain.explain_scan(*messages[0]["args"])["status"] == "ready"  # the worker
    ready = client.get(url, headers=auth("viewer"))
    assert ready.status_code == 200 and ready.mimetype == "image/png"
    assert ready.headers["Cache-Control"] == "private, no-cache"
    overlay = cv2.imdecode(np.frombuffer(ready.data, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (48, 48, 3)
    again = client.get(url, headers=auth("viewer"))
    assert again.status_code == 200 and again.data == ready.data
    assert len(queued_messages(broker, "inference")) == 1  # the cache hit queued nothing
    unchanged = client.get(url, headers={**auth("viewer"), "If-None-Match": ready.headers["ETag"]})
    assert unchanged.status_code == 304
    # How much of the map is warm rides along, so the page can say when nothing raised the score
    assert 0.0 < float(ready.headers["X-Heatmap-Share"]) <= 1.0
    sidecar = explain.explanation_path(client.application.extensions["mri"].settings, version_id, scan_id,
                                       "custom_cnn").with_suffix(".json")
    sidecar.write_text('{"heat_share": 0.0}')
    assert client.get(url, headers=auth("viewer")).headers["X-Heatmap-Share"] == "0.0000"
    sidecar.unlink()  # an overlay cached before the share was kept: no header, still served
    kept = client.get(url, headers=auth("viewer"))
    assert kept.status_code == 200 and "X-Heatmap-Share" not in kept.headers
    # another model of the same scan is its own explanation
    assert client.get(f"/api/v1/scans/{scan_id}/explanation?model=svm", headers=auth("viewer")).status_code == 202


def test_a_failed_explanation_says_why_once(client, auth, broker, classified, app):
    scan_id, version_id = classified
    for blob in app.extensions["mri"].settings.uploads_dir.rglob("*"):
        if blob.is_file():
            blob.unlink()
    url = f"/api/v1/scans/{scan_id}/explanation?model=vgg16"
    assert client.get(url, headers=auth("viewer")).status_code == 202
    assert explain.explain_scan(scan_id, version_id, "vgg16")["status"] == "failed"
    failed = client.get(url, headers=auth("viewer"))
    assert failed.status_code == 422 and failed.get_json()["error"] == "explanation_failed"
    assert "stored file" in failed.get_json()["detail"]
    assert client.get(url, headers=auth("viewer")).status_code == 202  # asking again tries again


def test_errors(client, auth, session, broker, active_version):
    from db.models import Job, Prediction

    job = Job(name="errors", sealed=True, status="running", total=2)
    session.add(job)
    session.flush()
    queued = Scan(job_id=job.id, sha256="d" * 64, path="q.png", status="queued")
    partial = Scan(job_id=job.id, sha256="e" * 64, path="p.png", status="classified", model_version_id=active_version)
    session.add_all([queued, partial])
    session.flush()
    # a version without the custom CNN classified this one
    session.add(Prediction(scan_id=partial.id, model_version_id=active_version, model_name="resnet50",
                           label="glioma", confidence=0.9, probabilities={"glioma": 0.9, "notumor": 0.1}))
    session.commit()
    viewer = auth("viewer")

    def error(url: str) -> tuple[int, str]:
        response = client.get(url, headers=viewer)
        return response.status_code, response.get_json()["error"]

    assert error("/api/v1/scans/424242/explanation?model=resnet50") == (404, "not_found")
    assert error(f"/api/v1/scans/{partial.id}/explanation?model=ensemble") == (422, "unknown_model")
    assert error(f"/api/v1/scans/{partial.id}/explanation") == (422, "unknown_model")
    assert error(f"/api/v1/scans/{partial.id}/explanation?model=custom_cnn") == (422, "unknown_model")
    assert error(f"/api/v1/scans/{queued.id}/explanation?model=resnet50") == (422, "not_classified")
    assert error(f"/api/v1/scans/{partial.id}/explanation?model=resnet50&size=9") == (422, "unknown_fields")
    assert queued_messages(broker, "inference") == []  # none of these queued anything
    assert client.get(f"/api/v1/scans/{partial.id}/explanation?model=resnet50").status_code == 401
    # a browser without a login asks for the API URL: still 401 JSON, never the picture
    browser = client.get(f"/api/v1/scans/{partial.id}/explanation?model=resnet50", headers={"Accept": "text/html"})
    assert browser.status_code == 401 and browser.is_json


def test_the_broker_down_is_a_503_and_leaves_nothing_pending(tmp_path, app, auth, session, active_version):
    from db.models import Job, Prediction
    from web_helpers import build_app

    job = Job(name="b", sealed=True, status="done", total=1, done=1)
    session.add(job)
    session.flush()
    scan = Scan(job_id=job.id, sha256="f" * 64, path="b.png", status="classified", model_version_id=active_version)
    session.add(scan)
    session.flush()
    session.add(Prediction(scan_id=scan.id, model_version_id=active_version, model_name="vgg16", label="glioma",
                           confidence=0.9, probabilities={"glioma": 0.9, "notumor": 0.1}))
    session.commit()
    # The same database and DATA_DIR (so the same token works), a broker that does not answer.
    down = build_app(tmp_path, app.extensions["mri"].settings.database_url, redis_url="redis://127.0.0.1:1/0")
    try:
        response = down.test_client().get(f"/api/v1/scans/{scan.id}/explanation?model=vgg16", headers=auth("viewer"))
        assert response.status_code == 503 and response.get_json()["error"] == "broker_unavailable"
        path = explain.explanation_path(down.extensions["mri"].settings, active_version, scan.id, "vgg16")
        assert not path.with_name(f"{scan.id}-vgg16.pending").exists()  # the next request sends it
    finally:
        down.extensions["mri"].engine.dispose()


def test_the_scan_page_offers_each_models_explanation(client, auth, session, active_version):
    from db.models import Job, Prediction

    job = Job(name="page", sealed=True, status="done", total=2, done=1)
    session.add(job)
    session.flush()
    scan = Scan(job_id=job.id, sha256="a" * 64, path="s/a.png", status="classified", model_version_id=active_version)
    waiting = Scan(job_id=job.id, sha256="b" * 64, path="s/b.png", status="queued")
    session.add_all([scan, waiting])
    session.flush()
    labels = {"resnet50": "glioma", "vgg16": "glioma", "custom_cnn": "meningioma", "svm": "glioma",
              "random_forest": "glioma", "ensemble": "glioma"}
    for name, label in labels.items():
        session.add(Prediction(scan_id=scan.id, model_version_id=active_version, model_name=name, label=label,
                               confidence=0.8, probabilities={label: 0.8}, agreement=4 if name == "ensemble" else None))
    session.commit()
    # The picture cannot be shown (no stored file), and then neither can an explanation.
    assert 'id="explanation-form"' not in client.get(f"/scans/{scan.id}", headers=auth("viewer")).get_data(as_text=True)
    from tests.workers.jobdata import store_blob
    from web_helpers import png_bytes

    scan.sha256 = store_blob(client.application.extensions["mri"].settings, png_bytes(1))
    session.commit()
    page = client.get(f"/scans/{scan.id}", headers=auth("viewer")).get_data(as_text=True)
    assert f'data-url="/api/v1/scans/{scan.id}/explanation"' in page
    assert '<script src="/static/explain.js"></script>' in page and "<script>" not in page and " style=" not in page
    # every model, the one that disagrees with the ensemble chosen first; SVM/RF say how they are explained
    options = re.findall(r'<option value="(\w+)" data-label="(\w+)" ?(selected)?>([^<]*)</option>', page)
    assert [(value, label) for value, label, _, _ in options if value in labels] == \
        [(name, label) for name, label in labels.items() if name != "ensemble"]
    assert [value for value, _, chosen, _ in options if chosen] == ["custom_cnn"]
    assert "svm: glioma (via ResNet50)" in page
    waiting.sha256 = scan.sha256
    session.commit()
    assert 'id="explanation-form"' not in client.get(f"/scans/{waiting.id}", headers=auth("viewer")).get_data(as_text=True)
    script = client.get("/static/explain.js").get_data(as_text=True)
    assert "Retry-After" in script and "form.dataset.url" in script


def test_heat_share_is_zero_for_an_empty_map_and_the_warm_fraction_otherwise():
    assert explain.heat_share(np.zeros((4, 4), np.float32)) == 0.0
    heat = np.zeros((4, 4), np.float32)
    heat[0, :2] = [1.0, 0.5]
    heat[1, 0] = 0.05  # below a tenth of the peak: not counted
    assert explain.heat_share(heat) == 2 / 16
