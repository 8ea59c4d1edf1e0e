"""The hostile corpus uploaded through the real endpoint into one job, then classified by the real
worker function with the tiny bundle: every bad scan ends failed with a plain reason, the good
scans of the same job are classified, and nothing is written outside DATA_DIR."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from db.models import Job, Prediction, Scan
from tasks.classify import classify_scans
from tasks.versions import activate_version, register_bundle
from tests.helpers.bad_inputs import BadInput, corpus, jpeg_bytes, png_bytes
from tests.web.web_helpers import build_app, upload_data


def _token(app) -> dict[str, str]:
    from web.auth import get_or_create_user, issue_token

    with app.extensions["mri"].session_factory() as s:
        token = issue_token(s, get_or_create_user(s, "uploader", "uploader"))
        s.commit()
    return {"Authorization": f"Bearer {token}"}


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _upload_corpus(app, job_files: list[tuple[str, bytes]]) -> tuple[int, dict[int, BadInput | None]]:
    """Open a job with the good files, add each corpus input by its own request, close it.

    Returns the job id and, per scan id, the corpus input it came from (None: a good file).
    """
    client, headers = app.test_client(), _token(app)
    created = client.post("/api/v1/jobs?open=1", data=upload_data(job_files), headers=headers)
    assert created.status_code == 202, created.get_json()
    job_id = created.get_json()["id"]
    factory = app.extensions["mri"].session_factory

    def scan_ids() -> set[int]:
        with factory() as s:
            return set(s.scalars(select(Scan.id).where(Scan.job_id == job_id)))

    origin: dict[int, BadInput | None] = dict.fromkeys(scan_ids())
    for item in corpus():
        response = client.post(f"/api/v1/jobs/{job_id}/files", data=upload_data(list(item.files)),
                               headers=headers)
        if item.refused:
            assert (response.status_code, response.get_json()["error"]) == item.refused, item.name
            continue
        assert response.status_code == 202, (item.name, response.get_json())
        new = scan_ids() - set(origin)
        assert new, item.name
        origin.update(dict.fromkeys(new, item))
    assert client.post(f"/api/v1/jobs/{job_id}/close", headers=headers).status_code == 200
    return job_id, origin


def test_bad_scans_fail_with_reasons_and_good_ones_are_classified(factory, settings, redis_url, tiny_bundle,
                                                                  database_url, tmp_path):
    app = build_app(tmp_path, database_url, redis_url=redis_url)
    try:
        assert app.extensions["mri"].settings.data_dir == settings.data_dir
        before = _files_under(tmp_path)
        with factory() as session:
            version = register_bundle(session, tiny_bundle)
            activate_version(session, version)
            session.commit()
            version_id = version.id
        good = [("good/a.png", png_bytes(101)), ("good/b.jpg", jpeg_bytes(102))]
        job_id, origin = _upload_corpus(app, good)
        outcome = classify_scans(factory, settings, sorted(origin), version_id)
        # Skipped: DICOM files de-identification refused, failed at upload and never stored.
        assert len(outcome.classified) + len(outcome.failed) + len(outcome.skipped) == len(origin)
        with factory() as session:
            scans = {s.id: s for s in session.scalars(select(Scan).where(Scan.job_id == job_id))}
            predicted = set(session.scalars(select(Prediction.scan_id).distinct()))
            job = session.get(Job, job_id)
            assert (job.status, job.total, job.done + job.failed) == ("done", len(origin), len(origin))
        for scan_id, item in origin.items():
            scan, name = scans[scan_id], item.name if item else "good"
            if item is None or item.classified:
                assert (scan.status, scan.error) == ("classified", ""), (name, scan.error)
                assert scan_id in predicted
            else:
                assert scan.status == "failed" and item.reason in scan.error.lower(), (name, scan.error)
                assert scan_id not in predicted and len(scan.error) < 300
        reasons = {origin[i].name: scans[i].error for i in origin if origin[i] and not origin[i].classified}
        assert "36,000,000" in reasons["png-bomb-40k"] and "40000 x 40000" in reasons["png-bomb-40k"]
        assert sum(1 for item in origin.values() if item is None or item.classified) >= 15
        assert sum(1 for item in origin.values() if item and not item.classified) >= 20
        outside = [p for p in _files_under(tmp_path) - before
                   if not p.is_relative_to(settings.data_dir) and not p.name.startswith("service.db")]
        assert outside == []
    finally:
        app.extensions["mri"].engine.dispose()
