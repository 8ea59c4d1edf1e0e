"""Every hostile input of the corpus through the real upload endpoint: a clear 4xx, or clean scans.

Whatever the input, nothing is written outside DATA_DIR and every stored name fits
its database column (checked on PostgreSQL, which enforces lengths and refuses NUL).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.migrate import upgrade
from db.models import Job, Scan
from tests.helpers.bad_inputs import (
    BadInput,
    corpus,
    deflated_dicom_bomb,
    dicom_bytes,
    python_in_subprocess,
    ramp16,
)
from web.ingest import plan_scans, probe_dicom
from web_helpers import blob_files, build_app, leftovers, upload_data

CORPUS = corpus()
PATH_CHARS = Scan.__table__.c.path.type.length
STUDY_CHARS = Scan.__table__.c.study.type.length
NAME_INPUTS = ("name-1000-chars", "folder-600-chars", "name-unicode", "name-control-chars", "zip-long-names",
               "zip-unicode-names", "dicom-study-uid-with-nul")


def files_under(root: Path) -> set[Path]:
    """Every file below root, relative to it."""
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def post(client, headers: dict[str, str], item: BadInput):
    return client.post("/api/v1/jobs", data=upload_data(list(item.files)), headers=headers)


def assert_clean_text(value: str, limit: int) -> None:
    assert len(value) <= limit
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in value), repr(value)


def assert_clean_scans(scans: list[Scan]) -> None:
    for scan in scans:
        assert_clean_text(scan.path, PATH_CHARS)
        assert_clean_text(scan.study, STUDY_CHARS)
        assert scan.path and not scan.path.startswith("/")
        assert ".." not in scan.path.split("/") and "\\" not in scan.path


def test_the_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 30 and len({item.name for item in CORPUS}) == len(CORPUS)
    kinds = {"refused": 0, "failed": 0, "classified": 0}
    for item in CORPUS:
        kinds["refused" if item.refused else "classified" if item.classified else "failed"] += 1
    assert min(kinds.values()) >= 5, kinds


@pytest.mark.parametrize("item", CORPUS, ids=[item.name for item in CORPUS])
def test_corpus_input_is_refused_or_becomes_clean_scans(client, auth, app, session, tmp_path, item):
    data_dir = app.extensions["mri"].settings.data_dir
    before = files_under(tmp_path)
    response = post(client, auth("uploader"), item)
    body = response.get_json()
    if item.refused:
        assert (response.status_code, body.get("error")) == item.refused, body
        assert set(body) == {"error", "detail"} and body["detail"]
        assert session.scalar(select(func.count(Job.id))) == 0
        assert blob_files(app) == []
        assert [p for p in leftovers(app) if p.is_file() or p.name.startswith("stage-")] == []
    else:
        assert response.status_code == 202, body
        scans = list(session.scalars(select(Scan).where(Scan.job_id == body["id"])))
        assert scans and len(scans) == body["total"]
        # Queued for a worker, or (a DICOM file de-identification refuses) failed at once, unstored.
        assert all(scan.status == "queued" or (scan.status == "failed" and scan.error.startswith("not stored:"))
                   for scan in scans), [(scan.status, scan.error) for scan in scans]
        assert_clean_scans(scans)
    written = files_under(tmp_path) - before
    outside = [p for p in written
               if not (tmp_path / p).is_relative_to(data_dir) and not p.name.startswith("service.db")]
    assert outside == []
    assert not (data_dir.parent / "escape.png").exists() and not (data_dir / "escape.png").exists()


def _token(app, role: str) -> dict[str, str]:
    from web.auth import get_or_create_user, issue_token

    with app.extensions["mri"].session_factory() as s:
        token = issue_token(s, get_or_create_user(s, role, role))
        s.commit()
    return {"Authorization": f"Bearer {token}"}


def test_odd_names_and_study_uids_fit_the_postgres_columns(tmp_path, postgres_url, broker):
    """A 600-character folder (the study), a zip of long names inside a long folder and a NUL in a
    StudyInstanceUID were 500s on PostgreSQL: value too long for its column, or NUL in text."""
    upgrade(postgres_url)
    # De-identification would replace the UID with a clean pseudonym; the raw one is the test.
    app = build_app(tmp_path, postgres_url, dicom_deidentify=False)
    try:
        client, headers = app.test_client(), _token(app, "uploader")
        for item in (i for i in CORPUS if i.name in NAME_INPUTS):
            response = post(client, headers, item)
            assert response.status_code == 202, (item.name, response.get_json())
        with app.extensions["mri"].session_factory() as s:
            scans = list(s.scalars(select(Scan)))
        assert len(scans) == 8
        assert_clean_scans(scans)
        assert {len(scan.study) for scan in scans} >= {STUDY_CHARS}
        assert "1.2.3.4" in {scan.study for scan in scans}
    finally:
        app.extensions["mri"].engine.dispose()


def test_an_over_limit_multi_frame_dicom_is_one_scan_when_the_limit_is_given(tmp_path):
    path = tmp_path / "frames.dcm"
    path.write_bytes(dicom_bytes(ramp16(16, frames=30), frames=30, rows=2_000, columns=2_000, study="7.7"))
    assert probe_dicom(path, "frames.dcm") == (30, "7.7")
    assert probe_dicom(path, "frames.dcm", max_pixels=36_000_000) == (1, "7.7")
    assert probe_dicom(path, "frames.dcm", max_pixels=120_000_000) == (30, "7.7")


def test_plan_scans_passes_the_limit_to_the_probe(tmp_path):
    from web.blobs import BlobStager
    from web.ingest import IncomingFile

    import io

    stager = BlobStager(tmp_path / "blobs", tmp_path / "tmp")
    blob = stager.add(io.BytesIO(dicom_bytes(ramp16(16, frames=3), frames=3)))
    incoming = [IncomingFile("s/multi.dcm", blob)]
    assert [s.frame for s in plan_scans(incoming, 100)] == [0, 1, 2]
    assert [s.frame for s in plan_scans(incoming, 100, max_pixels=3 * 16 * 16 - 1)] == [0]
    stager.discard()


PROBE = """
from pathlib import Path
from web.ingest import probe_dicom
result = list(probe_dicom(Path(sys.argv[1]), "bomb.dcm"))
"""


def test_probing_a_deflated_dicom_bomb_stays_small(tmp_path):
    """pydicom inflates a deflated data set whole, even to read two header attributes."""
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflated_dicom_bomb(1 << 30))
    measured = python_in_subprocess(PROBE, path)
    assert measured["result"] == [1, ""]
    assert measured["peak_mb"] < 300, measured
