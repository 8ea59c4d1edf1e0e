"""Upload → job status → per-scan results, the multi-request upload, and dispatch to the broker."""
from __future__ import annotations

from sqlalchemy import func, select

from db.models import Job, Prediction, Scan
from web_helpers import blob_files, leftovers, png_bytes, queued_messages, upload_data

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
MODELS = ["resnet50", "vgg16", "custom_cnn", "svm", "random_forest"]


def test_upload_answers_202_with_id_and_status_url(client, auth, session):
    files = [("study1/a.png", png_bytes(1)), ("study1/b.png", png_bytes(2)), ("study2/c.png", png_bytes(3))]
    response = client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader"))
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert set(body) >= {"id", "status_url"}
    assert body["status_url"] == f"/api/v1/jobs/{body['id']}"
    assert response.headers["Location"] == body["status_url"]
    scans = session.execute(select(Scan).where(Scan.job_id == body["id"]).order_by(Scan.path)).scalars().all()
    assert [(s.path, s.study, s.frame, s.status) for s in scans] == [
        ("study1/a.png", "study1", 0, "queued"), ("study1/b.png", "study1", 0, "queued"),
        ("study2/c.png", "study2", 0, "queued")]
    job = session.get(Job, body["id"])
    assert job.sealed and job.total == 3


def test_files_larger_than_the_parser_buffer_upload_fine(client, auth, session):
    import os
    files = [(f"big/{i}.dcm", os.urandom(300 * 1024)) for i in range(4)]  # 1.2 MB < MAX_UPLOAD_MB=2
    response = client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader"))
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["total"] == 4


def test_status_shape_and_waiting_detail_without_a_model(client, auth):
    created = client.post("/api/v1/jobs", data=upload_data([("x/a.png", png_bytes())]),
                          headers=auth("uploader")).get_json()
    status = client.get(created["status_url"], headers=auth("viewer"))
    assert status.status_code == 200
    body = status.get_json()
    assert set(body) >= {"id", "status", "total", "done", "failed", "progress", "created", "finished",
                         "detail", "reused"}
    assert (body["status"], body["total"], body["done"], body["failed"], body["progress"]) == ("queued", 1, 0, 0, 0)
    assert body["finished"] is None and body["created"].endswith("Z")
    assert "no active model version" in body["detail"]


def test_classify_tasks_are_enqueued_in_chunks_of_the_batch_size(client, auth, active_version, broker, session):
    files = [(f"s/{i}.png", png_bytes(i)) for i in range(10)]
    job_id = client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader")).get_json()["id"]
    messages = queued_messages(broker, "inference")
    assert [m["task"] for m in messages] == ["tasks.classify_batch"] * 3
    assert [len(m["args"][0]) for m in messages] == [4, 4, 2]  # INFERENCE_BATCH_SIZE=4 in these tests
    assert all(m["args"][1] == active_version for m in messages)
    scan_ids = session.execute(select(Scan.id).where(Scan.job_id == job_id).order_by(Scan.id)).scalars().all()
    assert [i for m in messages for i in m["args"][0]] == list(scan_ids)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=auth("viewer")).get_json()["detail"] == ""


def _store_predictions(session, scan: Scan, version_id: int, label: str) -> None:
    probs = {c: (0.7 if c == label else 0.1) for c in CLASSES}
    for name in [*MODELS, "ensemble"]:
        session.add(Prediction(scan_id=scan.id, model_version_id=version_id, model_name=name, label=label,
                               confidence=0.7, probabilities=probs, latency_ms=12.5,
                               agreement=5 if name == "ensemble" else None))
    scan.status, scan.model_version_id = "classified", version_id
    scan.classified_at = func.now()


def test_results_shape_with_five_models_and_ensemble(client, auth, active_version, session):
    files = [("st/good.png", png_bytes(1)), ("st/bad.png", b"not an image")]
    job_id = client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader")).get_json()["id"]
    good, bad = session.execute(select(Scan).where(Scan.job_id == job_id).order_by(Scan.id)).scalars().all()
    _store_predictions(session, good, active_version, "glioma")
    bad.status, bad.error = "failed", "not a supported image: unknown format"
    session.commit()
    from tasks.jobs import refresh_job
    refresh_job(session, job_id)
    session.commit()
    body = client.get(f"/api/v1/jobs/{job_id}/results", headers=auth("viewer")).get_json()
    assert body["job"]["status"] == "done" and body["job"]["progress"] == 1.0
    assert body["job"]["done"] == 1 and body["job"]["failed"] == 1 and body["job"]["finished"]
    first, second = body["scans"]
    assert set(first) >= {"id", "path", "study", "status", "error", "model_version", "predictions", "ensemble"}
    assert first["path"] == "st/good.png" and first["status"] == "classified"
    assert list(first["predictions"]) == MODELS
    assert first["predictions"]["svm"]["label"] == "glioma"
    assert set(first["predictions"]["vgg16"]["probabilities"]) == set(CLASSES)
    assert first["ensemble"]["label"] == "glioma" and first["ensemble"]["agreement"] == 5
    assert set(first["ensemble"]) >= {"label", "probabilities", "agreement"}
    assert first["model_version"] == active_version
    assert second["status"] == "failed" and second["error"].startswith("not a supported image")
    assert second["predictions"] == {} and second["ensemble"] is None


def test_identical_content_is_stored_once(client, auth, app, session):
    same = png_bytes(7)
    files = [("a/one.png", same), ("b/two.png", same), ("a/three.png", png_bytes(8))]
    client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader"))
    client.post("/api/v1/jobs", data=upload_data([("c/again.png", same)]), headers=auth("uploader"))
    assert len(blob_files(app)) == 2
    shas = session.execute(select(Scan.sha256).order_by(Scan.id)).scalars().all()
    assert len(shas) == 4 and shas[0] == shas[1] == shas[3] != shas[2]
    import hashlib
    stored = {p.name for p in blob_files(app)}
    assert hashlib.sha256(same).hexdigest() in stored
    assert leftovers(app) == [] or all(p.is_dir() for p in leftovers(app))


def test_multi_request_upload_open_add_close(client, auth, active_version, broker, session):
    headers = auth("uploader")
    first = client.post("/api/v1/jobs?open=1", data=upload_data([("big/1.png", png_bytes(1))]), headers=headers)
    assert first.status_code == 202
    job_id = first.get_json()["id"]
    added = client.post(f"/api/v1/jobs/{job_id}/files",
                        data=upload_data([("big/2.png", png_bytes(2)), ("big/3.png", png_bytes(3))]),
                        headers=headers)
    assert added.status_code == 202 and added.get_json()["added"] == 2
    # a retried part is idempotent; a different file under a taken path is kept under a new name
    client.post(f"/api/v1/jobs/{job_id}/files", data=upload_data([("big/2.png", png_bytes(2))]), headers=headers)
    client.post(f"/api/v1/jobs/{job_id}/files", data=upload_data([("big/2.png", png_bytes(9))]), headers=headers)
    status = client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()
    assert status["total"] == 4 and status["sealed"] is False
    paths = session.execute(select(Scan.path).where(Scan.job_id == job_id).order_by(Scan.id)).scalars().all()
    assert paths == ["big/1.png", "big/2.png", "big/3.png", "big/2~2.png"]
    # every scan was sent exactly once, in the request that brought it
    sent = [i for m in queued_messages(broker, "inference") for i in m["args"][0]]
    assert sorted(sent) == sorted(session.execute(select(Scan.id).where(Scan.job_id == job_id)).scalars())
    closed = client.post(f"/api/v1/jobs/{job_id}/close", headers=headers)
    assert closed.status_code == 200 and closed.get_json()["sealed"] is True
    again = client.post(f"/api/v1/jobs/{job_id}/files", data=upload_data([("big/4.png", png_bytes(4))]),
                        headers=headers)
    assert again.status_code == 409 and again.get_json()["error"] == "job_closed"


def test_a_job_sent_in_parts_is_named_for_every_part(client, auth, active_version, session):
    from db.models import Job

    headers = auth("uploader")

    def opened(files) -> int:
        return client.post("/api/v1/jobs?open=1", data=upload_data(files), headers=headers).get_json()["id"]

    def add(job_id, files) -> None:
        assert client.post(f"/api/v1/jobs/{job_id}/files", data=upload_data(files), headers=headers).status_code == 202

    one_study = opened([("patient-K1/1.png", png_bytes(1))])
    add(one_study, [("patient-K1/2.png", png_bytes(2))])
    two_studies = opened([("patient-K1/1.png", png_bytes(1)), ("patient-K1/2.png", png_bytes(2))])
    add(two_studies, [("patient-K2/3.png", png_bytes(3))])
    loose_first = opened([("a.png", png_bytes(4))])
    add(loose_first, [("patient-K3/5.png", png_bytes(5)), ("patient-K3/6.png", png_bytes(6))])
    add(loose_first, [("patient-K3/7.png", png_bytes(7))])
    session.expire_all()
    names = {job_id: session.get(Job, job_id).name for job_id in (one_study, two_studies, loose_first)}
    # as one request of all the files would have named them
    assert names == {one_study: "patient-K1", two_studies: "3 files", loose_first: "4 files"}


def test_single_request_upload_is_sealed_and_cannot_take_more(client, auth):
    job_id = client.post("/api/v1/jobs", data=upload_data([("a.png", png_bytes())]),
                         headers=auth("uploader")).get_json()["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/files", data=upload_data([("b.png", png_bytes(1))]),
                           headers=auth("uploader"))
    assert response.status_code == 409


def test_unknown_job_is_404_json(client, auth):
    for url in ("/api/v1/jobs/999", "/api/v1/jobs/999/results"):
        response = client.get(url, headers=auth("viewer"))
        assert response.status_code == 404
        assert set(response.get_json()) == {"error", "detail"}
    assert client.post("/api/v1/jobs/999/close", headers=auth("uploader")).status_code == 404


def test_close_seals_an_open_job(client, auth):
    job_id = client.post("/api/v1/jobs?open=1", data=upload_data([("a.png", png_bytes())]),
                         headers=auth("uploader")).get_json()["id"]
    body = client.post(f"/api/v1/jobs/{job_id}/close", headers=auth("uploader")).get_json()
    assert body["status"] == "queued" and body["sealed"] is True


def _fail_audit_inserts(session, action: str) -> None:
    """A real database refusal after the blobs are stored: a trigger aborts the job's audit row."""
    from sqlalchemy import text
    session.execute(text(f"CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
                         f"WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"))
    session.commit()


def test_a_failed_database_write_removes_only_the_blobs_this_upload_stored(app, client, auth, session):
    kept = png_bytes(1)
    first = client.post("/api/v1/jobs", data=upload_data([("s/kept.png", kept)]), headers=auth("uploader"))
    assert first.status_code == 202
    before = {p.name for p in blob_files(app)}
    assert len(before) == 1
    _fail_audit_inserts(session, "job.create")
    failed = client.post("/api/v1/jobs", data=upload_data([("t/kept.png", kept), ("t/new.png", png_bytes(2))]),
                         headers=auth("uploader"))
    assert failed.status_code == 500
    assert {p.name for p in blob_files(app)} == before  # new.png's blob is gone, the older blob stays
    assert session.scalar(select(func.count()).select_from(Job)) == 1
    assert [p for p in leftovers(app) if p.is_file()] == []


def test_a_failed_add_files_write_removes_new_blobs_but_keeps_ones_other_jobs_use(app, client, auth, session):
    shared = png_bytes(3)
    created = client.post("/api/v1/jobs?open=1", data=upload_data([("s/a.png", shared)]), headers=auth("uploader"))
    job_id = created.get_json()["id"]
    (stored,) = blob_files(app)
    stored.unlink()  # as if a concurrent upload had stored rows for content this request is about to place
    _fail_audit_inserts(session, "job.add_files")
    failed = client.post(f"/api/v1/jobs/{job_id}/files", data=upload_data([("s/b.png", shared), ("s/c.png", png_bytes(4))]),
                         headers=auth("uploader"))
    assert failed.status_code == 500
    assert [p.name for p in blob_files(app)] == [stored.name]  # used by job 1's scan: kept; c.png: removed
    assert session.scalar(select(func.count()).select_from(Scan).where(Scan.job_id == job_id)) == 1
