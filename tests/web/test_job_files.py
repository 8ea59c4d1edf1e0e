"""GET /api/v1/jobs/<id>/files: what a job holds, by content hash, so a client can resume an upload."""
from __future__ import annotations

import hashlib

from sqlalchemy import select

from db.models import Scan
from test_web_ingest import dicom_bytes
from web_helpers import png_bytes, upload_data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_files_list_paths_hashes_and_frames_of_what_the_job_received(client, auth, session):
    a, b = png_bytes(1), png_bytes(2)
    dicom = dicom_bytes(frames=3, study_uid="1.2.840.99")
    created = client.post("/api/v1/jobs?open=1", data=upload_data([("s1/a.png", a), ("s1/scan.dcm", dicom)]),
                          headers=auth("uploader")).get_json()
    client.post(f"/api/v1/jobs/{created['id']}/files", data=upload_data([("s2/b.png", b)]),
                headers=auth("uploader"))
    response = client.get(f"/api/v1/jobs/{created['id']}/files", headers=auth("viewer"))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["id"], body["sealed"]) == (created["id"], False)
    files = {f["path"]: f for f in body["files"]}
    assert list(files) == ["s1/a.png", "s1/scan.dcm", "s2/b.png"]
    assert files["s1/a.png"] == {"path": "s1/a.png", "study": "s1", "sha256": sha(a), "sent_sha256": sha(a),
                                 "frames": 1}
    # The DICOM file was de-identified before it was stored: its stored hash differs from the
    # hash of the bytes as sent, and the listing gives both; its three frames are one file.
    stored = session.scalars(select(Scan.sha256).where(Scan.path == "s1/scan.dcm")).first()
    assert files["s1/scan.dcm"]["sha256"] == stored != sha(dicom)
    assert files["s1/scan.dcm"]["sent_sha256"] == sha(dicom)
    assert files["s1/scan.dcm"]["frames"] == 3
    assert files["s1/scan.dcm"]["study"] not in ("", "s1", "1.2.840.99")  # the pseudonymous study UID


def test_files_of_an_unknown_job_is_404(client, auth):
    response = client.get("/api/v1/jobs/999/files", headers=auth("viewer"))
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
