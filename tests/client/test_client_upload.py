"""`mri-classify submit / status / results` against the real web app over HTTP: an interrupted
upload resumed without sending again what the job holds, retries, exit codes, where the token
comes from."""
from __future__ import annotations

import csv
import io
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from db.models import Job, Scan

FAST = ("--retries", "1", "--backoff", "0.01")


def png(seed: int, size: int = 24) -> bytes:
    """A small PNG, different for each seed."""
    pixels = np.random.default_rng(seed).integers(0, 255, size=(size, size), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def study_folder(root: Path, name: str = "study-7", count: int = 12) -> Path:
    """A study folder of `count` slices in two series, plus desktop litter the service skips."""
    folder = root / name
    for index in range(count):
        path = folder / f"series{index % 2}" / f"slice_{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(index))
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return folder


def env(url: str, token: str) -> dict[str, str]:
    return {"MRI_URL": url, "MRI_TOKEN": token}


def job_scans(service, job_id: int) -> list[tuple[str, str]]:
    with service.session() as session:
        return sorted(session.execute(select(Scan.path, Scan.study).where(Scan.job_id == job_id)).all())


def test_an_interrupted_upload_resumes_sending_only_the_missing_files(service, proxy, mri, tmp_path):
    folder = study_folder(tmp_path)
    environ = env(proxy.url, service.token("uploader"))
    proxy.uploads_allowed = 2  # then the network goes away for uploads
    first = mri(*FAST, "submit", str(folder), "--part-files", "3", env=environ)
    assert first.code == 6, first.err
    assert "run the same command again" in first.err
    with service.session() as session:
        job = session.scalars(select(Job)).one()
        assert (job.sealed, job.total) == (False, 6)
    assert proxy.files_sent() == 6
    assert len(list((tmp_path / "state" / "uploads").glob("*.json"))) == 1

    proxy.uploads_allowed, proxy.requests = None, []
    second = mri(*FAST, "submit", str(folder), "--part-files", "3", env=environ)
    assert second.code == 0, second.err
    assert second.out.strip() == f"{proxy.url}/jobs/{job.id}"
    assert f"job {job.id}: 6 of 12 files already there; sending 6" in second.err
    uploads = [r for r in proxy.requests if r[0] == "POST" and r[1].endswith("/files")]
    assert [parts for _, _, parts in uploads] == [3, 3] and proxy.files_sent() == 6
    assert ("GET", f"/api/v1/jobs/{job.id}/files", 0) in proxy.requests
    scans = job_scans(service, job.id)
    assert len(scans) == 12 and len(set(scans)) == 12
    assert {study for _, study in scans} == {"study-7"}
    assert scans[0][0] == "study-7/series0/slice_000.png"
    with service.session() as session:
        assert session.get(Job, job.id).sealed
    assert list((tmp_path / "state" / "uploads").glob("*.json")) == []


def test_resume_by_job_id_matches_by_content_hash_whatever_the_input(service, proxy, mri, tmp_path):
    """A folder upload cut short, resumed by job id from a zip of the same folder: only the files
    whose SHA-256 the job lacks are sent."""
    folder = study_folder(tmp_path, count=8)
    environ = env(proxy.url, service.token("uploader"))
    proxy.uploads_allowed = 1
    assert mri(*FAST, "submit", str(folder), "--part-files", "5", env=environ).code == 6
    with service.session() as session:
        job_id = session.scalars(select(Job.id)).one()
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*.png")):
            handle.write(path, path.relative_to(tmp_path).as_posix())
    proxy.uploads_allowed, proxy.requests = None, []
    resumed = mri(*FAST, "submit", "--resume", str(job_id), str(archive), env=environ)
    assert resumed.code == 0, resumed.err
    assert proxy.files_sent() == 3
    assert len(job_scans(service, job_id)) == 8


def test_a_part_answered_503_is_sent_again(service, proxy, mri, tmp_path):
    folder = study_folder(tmp_path, count=4)
    proxy.answer_503 = 1  # the job-creating request: the service did not process it, so it is retried
    run = mri(*FAST, "submit", str(folder), env=env(proxy.url, service.token("uploader")))
    assert run.code == 0, run.err
    assert "503 database_unavailable; trying again" in run.err
    with service.session() as session:
        assert session.scalars(select(Job.total)).all() == [4]


def test_status_and_results_csv_of_a_job(service, mri, tmp_path):
    folder = study_folder(tmp_path, count=3)
    environ = env(service.url, service.token("uploader"))
    submitted = mri("submit", str(folder), env=environ)
    assert submitted.code == 0, submitted.err
    job_id = int(submitted.out.strip().rsplit("/", 1)[1])
    status = mri("status", str(job_id), env=environ)
    assert status.code == 0, status.err
    assert "scans: 3 total, 0 classified, 0 failed, 3 waiting" in status.out
    assert json.loads(mri("status", str(job_id), "--json", env=environ).out)["total"] == 3
    with service.session() as session:  # a retired version: the service knows its classes, nothing runs
        from db.models import ModelVersion

        session.add(ModelVersion(digest="c" * 64, bundle_path="/gone", backbone_weights="none", status="retired",
                                 manifest={"classes": ["glioma", "meningioma", "notumor", "pituitary"]}))
        session.commit()
    target = tmp_path / "job.csv"
    exported = mri("results", str(job_id), "--csv", str(target), env=environ)
    assert exported.code == 0, exported.err
    rows = list(csv.DictReader(target.open()))
    # Nothing classified yet, and still the columns of a classified job: one per class, needs_review last
    header = target.read_text().splitlines()[0].split(",")
    assert header[-1] == "needs_review" and [c for c in header if c.startswith("p_")] == [
        "p_glioma", "p_meningioma", "p_notumor", "p_pituitary"]
    assert [(r["path"], r["study"], r["status"]) for r in rows] == [
        ("study-7/series0/slice_000.png", "study-7", "queued"), ("study-7/series0/slice_002.png", "study-7", "queued"),
        ("study-7/series1/slice_001.png", "study-7", "queued")]
    filtered = mri("results", "--label", "glioma", "--csv", "-", env=environ)
    assert filtered.code == 0 and filtered.out.startswith("scan_id,job_id,path")
    disagreeing = mri("results", str(job_id), "--max-agreement", "4", "--sort=-confidence", "--json", env=environ)
    assert disagreeing.code == 0 and json.loads(disagreeing.out) == [], disagreeing.err  # nothing classified yet
    queue = mri("results", str(job_id), "--needs-review", "--json", env=environ)
    assert queue.code == 0 and json.loads(queue.out) == [], queue.err


def test_exit_codes_and_messages_for_refusals(service, mri, tmp_path):
    folder = study_folder(tmp_path, count=1)
    bad = mri("status", "1", env=env(service.url, "not-a-token"))
    assert bad.code == 3 and "not authorized" in bad.err and "MRI_TOKEN" in bad.err
    viewer = mri("submit", str(folder), env=env(service.url, service.token("viewer")))
    assert viewer.code == 3 and "forbidden: this needs the uploader role" in viewer.err
    missing = mri("status", "4242", env=env(service.url, service.token("viewer")))
    assert missing.code == 4 and "job 4242 does not exist" in missing.err
    refused = mri("results", "--min-confidence", "2", env=env(service.url, service.token("viewer")))
    assert refused.code == 5 and "bad_filter" in refused.err
    nothing = mri("submit", str(tmp_path / "no-such-folder"), env=env(service.url, service.token("uploader")))
    assert nothing.code == 2 and "no such file or folder" in nothing.err


def test_an_unreachable_service_and_a_database_outage(mri, tmp_path, migrated_template):
    from client_helpers import serve
    from tests.helpers.services import free_port
    from web import create_app

    closed = mri(*FAST, "status", "1", env=env(f"http://127.0.0.1:{free_port()}", "t"))
    assert closed.code == 6 and "cannot reach the service" in closed.err
    app = create_app({"env": "test", "data_dir": tmp_path / "data", "log_level": "WARNING",
                      "database_url": "postgresql+psycopg://postgres@127.0.0.1:1/x",
                      "redis_url": "redis://127.0.0.1:6379/13"})
    server, _ = serve(app)
    try:
        down = mri("--retries", "0", "status", "1", env=env(f"http://127.0.0.1:{server.server_port}", "t"))
    finally:
        server.shutdown()
        app.extensions["mri"].engine.dispose()
    assert down.code == 6 and "database is unavailable" in down.err


def test_url_and_token_from_a_private_config_file_env_first(service, mri, tmp_path):
    config = tmp_path / "home" / ".config" / "mri-classify" / "config"
    config.parent.mkdir(parents=True)
    config.write_text(f"[mri-classify]\nurl = {service.url}\ntoken = {service.token('viewer')}\n")
    config.chmod(0o600)
    assert mri("status", "1", env={}).code == 4  # reached the service with the file's token: no job 1
    # the environment wins over the file
    assert mri("status", "1", env={"MRI_TOKEN": "not-a-token"}).code == 3
    config.chmod(0o644)
    unsafe = mri("status", "1", env={})
    assert unsafe.code == 2 and "chmod 600" in unsafe.err
    assert service.token("viewer") not in unsafe.err
    other = tmp_path / "elsewhere.ini"
    other.write_text(f"[mri-classify]\nurl = {service.url}\n")
    assert "no token" in mri("status", "1", env={"MRI_CONFIG": str(other)}).err


def test_resumed_dicom_files_stored_de_identified_are_not_sent_again(service, proxy, mri, tmp_path):
    """A DICOM file is stored de-identified, so the job's stored hash is not the client's: the job
    lists the hash as sent too, and the resumed upload skips it."""
    from tests.helpers.bad_inputs import dicom_bytes, ramp16

    folder = tmp_path / "ct-4"
    folder.mkdir()
    for index in range(4):
        (folder / f"{index}.dcm").write_bytes(dicom_bytes(ramp16(8 + index), PatientName="DOE^JOHN"))
    environ = env(proxy.url, service.token("uploader"))
    proxy.uploads_allowed = 1
    assert mri(*FAST, "submit", str(folder), "--part-files", "2", env=environ).code == 6
    with service.session() as session:
        stored = session.execute(select(Scan.sha256, Scan.sent_sha256)).all()
    assert len(stored) == 2 and all(sha != sent and sent for sha, sent in stored)
    proxy.uploads_allowed, proxy.requests = None, []
    resumed = mri(*FAST, "submit", str(folder), "--part-files", "2", env=environ)
    assert resumed.code == 0, resumed.err
    assert proxy.files_sent() == 2


def test_a_file_the_service_refuses_is_reported_and_the_rest_goes_through(service, mri, tmp_path):
    folder = study_folder(tmp_path, count=3)
    (folder / "series0" / "huge.png").write_bytes(b"\x89PNG" + b"\0" * (3 * 1024 * 1024))  # > MAX_UPLOAD_MB=2
    run = mri("submit", str(folder), env=env(service.url, service.token("uploader")))
    assert run.code == 5, run.err
    assert "1 file(s) refused:" in run.err and "study-7/series0/huge.png: payload_too_large" in run.err
    job_id = int(run.out.strip().rsplit("/", 1)[1])
    assert [path for path, _ in job_scans(service, job_id)] == [
        "study-7/series0/slice_000.png", "study-7/series0/slice_002.png", "study-7/series1/slice_001.png"]


def test_a_zip_that_cannot_be_read_is_refused_by_the_service_and_the_rest_goes_through(service, mri, tmp_path):
    folder = study_folder(tmp_path, count=3)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 this is not a zip")
    run = mri("submit", str(folder), str(broken), env=env(service.url, service.token("uploader")))
    assert run.code == 5, run.err
    assert "1 file(s) refused:" in run.err and "broken.zip: bad_zip" in run.err
    job_id = int(run.out.strip().rsplit("/", 1)[1])
    assert len(job_scans(service, job_id)) == 3


def _finish_later(service, job_id: int, after_s: float) -> threading.Thread:
    """Mark the job done after a while, as a worker finishing it would."""
    def finish() -> None:
        time.sleep(after_s)
        with service.session() as session:
            job = session.get(Job, job_id)
            job.status, job.done = "done", job.total
            session.commit()

    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    return thread


def _submitted_job(service, mri, tmp_path) -> int:
    submitted = mri("submit", str(study_folder(tmp_path, count=3)), env=env(service.url, service.token("uploader")))
    assert submitted.code == 0, submitted.err
    return int(submitted.out.strip().rsplit("/", 1)[1])


def _wait_through_proxy(service, proxy, mri, tmp_path, done_after_s: float) -> tuple[int, list[str]]:
    """Submit a job, have it finish after a while, follow it with `status --wait` through the proxy;
    return (job id, the paths of the GETs the client sent)."""
    job_id = _submitted_job(service, mri, tmp_path)
    finisher = _finish_later(service, job_id, done_after_s)
    run = mri("status", str(job_id), "--wait", env=env(proxy.url, service.token("viewer")))
    finisher.join()
    assert run.code == 0, run.err
    assert f"job {job_id} (study-7): done" in run.out and "scans: 3 total, 3 classified" in run.out
    return job_id, [path for method, path, _ in proxy.requests if method == "GET"]


def test_status_wait_follows_the_job_on_its_event_stream(service, proxy, mri, tmp_path):
    job_id, gets = _wait_through_proxy(service, proxy, mri, tmp_path, 1.5)
    # One request that the service answered as the job changed, and no polling.
    assert gets == [f"/api/v1/jobs/{job_id}/events"]


def test_status_wait_polls_where_the_stream_is_refused(service, proxy, mri, tmp_path):
    service.app.extensions["mri"].job_watch.max_streams = 0  # every stream answered 503 too_many_streams
    job_id, gets = _wait_through_proxy(service, proxy, mri, tmp_path, 1.5)
    assert gets[0] == f"/api/v1/jobs/{job_id}/events" and gets.count(f"/api/v1/jobs/{job_id}") >= 2


def test_status_wait_opens_a_new_stream_when_the_service_ends_one(service, proxy, mri, tmp_path, monkeypatch):
    """The service ends a stream after a while (5 minutes; 0.5 s here): the client opens another."""
    import client.cli
    import web.job_events

    monkeypatch.setattr(web.job_events, "STREAM_MAX_S", 0.5)
    monkeypatch.setattr(client.cli, "STREAM_RECONNECT_S", 0.1)
    job_id, gets = _wait_through_proxy(service, proxy, mri, tmp_path, 2.0)
    assert len(gets) >= 2 and set(gets) == {f"/api/v1/jobs/{job_id}/events"}  # streams again, never polls
