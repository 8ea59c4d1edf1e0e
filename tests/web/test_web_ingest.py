"""Ingest: safe paths, junk skipping, zips, study keys and DICOM frames."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db.models import Scan
from web.blobs import UnsafePath, blob_path, clean_upload_path, zip_member_path
from web.ingest import is_junk, probe_dicom, top_folder
from web_helpers import blob_files, png_bytes, upload_data


def dicom_bytes(frames: int = 1, study_uid: str = "1.2.826.0.1.3680043.8.498.1", size: int = 16,
                **identity: str) -> bytes:
    """A small valid DICOM file (uncompressed, MONOCHROME2) with `frames` frames, and `identity`
    elements (e.g. PatientName="DOE^JANE") set on it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality = "MR"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.arange(frames * size * size, dtype=np.uint16).reshape(frames, size, size) % 4096
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    for keyword, value in identity.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("raw, clean", [
    ("study/a.png", "study/a.png"), ("../../etc/passwd", "etc/passwd"), ("/abs/x.dcm", "abs/x.dcm"),
    ("C:\\Users\\me\\scan.dcm", "Users/me/scan.dcm"), ("a/./b//c.jpg", "a/b/c.jpg"),
    ("..", ""), ("a/\x00b.png", "a/b.png"), ("  s / x.png ", "s/x.png"),
])
def test_clean_upload_path(raw, clean):
    assert clean_upload_path(raw) == clean


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/x", "C:/x", "a\\..\\..\\x", "c:x"])
def test_zip_member_path_refuses_escapes(name):
    with pytest.raises(UnsafePath):
        zip_member_path(name)


def test_zip_member_path_keeps_inner_folders():
    assert zip_member_path("study/series/1.dcm") == "study/series/1.dcm"
    assert zip_member_path("./study/a..b.png") == "study/a..b.png"


def test_blob_path_is_sharded_and_refuses_non_digests(tmp_path: Path):
    sha = "ab" + "0" * 62
    assert blob_path(tmp_path, sha) == tmp_path / "ab" / sha
    with pytest.raises(ValueError):
        blob_path(tmp_path, "../" + "0" * 61)


@pytest.mark.parametrize("path, junk", [
    (".DS_Store", True), ("x/Thumbs.db", True), ("__MACOSX/s/a.png", True), ("s/._a.png", True),
    ("s/desktop.ini", True), ("s/a.png", False), ("notes.txt", False), ("s/scan", False),
])
def test_is_junk(path, junk):
    assert is_junk(path) is junk


def test_top_folder():
    assert top_folder("study1/series/a.dcm") == "study1"
    assert top_folder("a.png") == ""


def test_probe_dicom_reads_frames_and_study(tmp_path: Path):
    multi = tmp_path / "m"
    multi.write_bytes(dicom_bytes(frames=3, study_uid="1.2.3.4"))
    assert probe_dicom(multi, "series/m") == (3, "1.2.3.4")
    png = tmp_path / "p.png"
    png.write_bytes(png_bytes())
    assert probe_dicom(png, "p.png") == (1, "")
    broken = tmp_path / "b.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 10)
    assert probe_dicom(broken, "b.dcm")[0] == 1


def _pseudonym(app, data: bytes) -> str:
    """The StudyInstanceUID the service stores for a DICOM file (de-identified with its salt)."""
    from web.deidentify import deid_salt, deidentify_dicom

    return deidentify_dicom(data, deid_salt(app.extensions["mri"].settings.secret_key)).study_uid


def test_upload_creates_one_scan_per_dicom_frame_with_study_uid(client, auth, session, app):
    multi, single = dicom_bytes(frames=3, study_uid="1.2.840.99"), dicom_bytes(frames=1, study_uid="1.2.840.77")
    files = [("folderA/multi.dcm", multi), ("folderA/single", single),
             ("folderB/x.png", png_bytes(1)), ("loose.png", png_bytes(2)),
             ("folderB/notes.txt", b"not a scan, fails later in the worker")]
    job_id = client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader")).get_json()["id"]
    rows = session.execute(select(Scan.path, Scan.frame, Scan.study).where(Scan.job_id == job_id)
                           .order_by(Scan.id)).all()
    # DICOM files are stored de-identified: studies group by the pseudonymous StudyInstanceUID.
    study_a, study_b = _pseudonym(app, multi), _pseudonym(app, single)
    assert study_a not in ("1.2.840.99", study_b) and study_a.startswith("2.")
    assert rows == [("folderA/multi.dcm", 0, study_a), ("folderA/multi.dcm", 1, study_a),
                    ("folderA/multi.dcm", 2, study_a), ("folderA/single", 0, study_b),
                    ("folderB/x.png", 0, "folderB"), ("loose.png", 0, ""), ("folderB/notes.txt", 0, "folderB")]


PATIENT = dict(PatientName="DOE^JANE^Q", PatientID="MRN-20261129-7", PatientBirthDate="19610203",
               PatientAddress="12 Elm Street, Springfield", InstitutionName="Springfield General",
               ReferringPhysicianName="HOUSE^GREGORY", AccessionNumber="ACC-9988776")


def test_stored_dicom_blobs_hold_no_patient_identity_and_studies_stay_grouped(client, auth, app, session):
    """Two slices of one study, one sent loose and one inside a zip: the stored blobs carry none of
    the patient's identity or original UIDs, and both scans share one pseudonymous study."""
    first = dicom_bytes(study_uid="1.2.840.113619.2.55.3.1234", **PATIENT)
    second = dicom_bytes(study_uid="1.2.840.113619.2.55.3.1234", size=20, **PATIENT)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("study/slice2.dcm", second)
    data = {"files": [(io.BytesIO(first), "slice1.dcm"), (io.BytesIO(archive.getvalue()), "more.zip")],
            "paths": ["study/slice1.dcm", "more.zip"]}
    response = client.post("/api/v1/jobs", data=data, headers=auth("uploader"))
    assert response.status_code == 202, response.get_json()
    studies = set(session.scalars(select(Scan.study).where(Scan.job_id == response.get_json()["id"])))
    assert len(studies) == 1 and studies != {"1.2.840.113619.2.55.3.1234"}
    blobs = blob_files(app)
    assert len(blobs) == 2
    secrets = [*PATIENT.values(), "DOE", "Springfield", "1.2.840.113619.2.55.3.1234"]
    for blob in blobs:
        stored = blob.read_bytes()
        assert stored[128:132] == b"DICM"
        for secret in secrets:
            assert secret.encode() not in stored, secret


def test_with_deidentification_off_dicom_is_stored_as_sent(tmp_path, migrated_sqlite, broker):
    """DICOM_DEIDENTIFY=false: the file's own StudyInstanceUID groups it, and the blob is the upload."""
    import hashlib
    import shutil

    from web_helpers import build_app

    shutil.copy(migrated_sqlite, tmp_path / "off.db")
    app = build_app(tmp_path, f"sqlite:///{tmp_path / 'off.db'}", dicom_deidentify=False)
    from web.auth import get_or_create_user, issue_token

    with app.extensions["mri"].session_factory() as s:
        token = issue_token(s, get_or_create_user(s, "up", "uploader"))
        s.commit()
    data = dicom_bytes(frames=1, study_uid="1.2.840.77")
    body = app.test_client().post("/api/v1/jobs", data=upload_data([("a/x.dcm", data)]),
                                  headers={"Authorization": f"Bearer {token}"}).get_json()
    with app.extensions["mri"].session_factory() as s:
        scan = s.scalar(select(Scan).where(Scan.job_id == body["id"]))
        assert (scan.study, scan.sha256) == ("1.2.840.77", hashlib.sha256(data).hexdigest())
    app.extensions["mri"].engine.dispose()


def test_paths_come_from_filenames_when_no_paths_field(client, auth, session):
    data = upload_data([("s/a.png", png_bytes(1))], with_paths=False)
    data["files"] = [(io.BytesIO(png_bytes(1)), "../study9/a.png")]
    job_id = client.post("/api/v1/jobs", data=data, headers=auth("uploader")).get_json()["id"]
    assert session.scalar(select(Scan.path).where(Scan.job_id == job_id)) == "study9/a.png"


def test_zip_upload_expands_members_and_skips_litter(client, auth, app, session):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("st1/a.png", png_bytes(1))
        archive.writestr("st1/sub/", b"")
        archive.writestr("st1/sub/b.dcm", dicom_bytes(frames=2, study_uid="9.9"))
        archive.writestr("st2/c.png", png_bytes(1))  # same bytes as st1/a.png: one blob
        archive.writestr("__MACOSX/st1/._a.png", b"junk")
        archive.writestr("st1/.DS_Store", b"junk")
    response = client.post("/api/v1/jobs", data={"files": [(io.BytesIO(out.getvalue()), "upload.zip")]},
                           headers=auth("uploader"))
    assert response.status_code == 202
    rows = session.execute(select(Scan.path, Scan.frame, Scan.study).where(
        Scan.job_id == response.get_json()["id"]).order_by(Scan.id)).all()
    study = _pseudonym(app, dicom_bytes(frames=2, study_uid="9.9"))
    assert rows == [("st1/a.png", 0, "st1"), ("st1/sub/b.dcm", 0, study), ("st1/sub/b.dcm", 1, study),
                    ("st2/c.png", 0, "st2")]
    assert len(blob_files(app)) == 2


def test_zip_inside_a_folder_keeps_its_folder_prefix(client, auth, session):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.png", png_bytes(3))
    data = {"files": [(io.BytesIO(out.getvalue()), "part.zip"), (io.BytesIO(png_bytes(4)), "b.png")],
            "paths": ["batch/part.zip", "batch/b.png"]}
    job_id = client.post("/api/v1/jobs", data=data, headers=auth("uploader")).get_json()["id"]
    paths = session.execute(select(Scan.path).where(Scan.job_id == job_id).order_by(Scan.id)).scalars().all()
    assert paths == ["batch/a.png", "batch/b.png"]


def test_blobs_hold_the_exact_bytes_and_nothing_is_written_outside_data_dir(client, auth, app, tmp_path):
    content = png_bytes(5)
    client.post("/api/v1/jobs", data=upload_data([("../../../outside.png", content)]), headers=auth("uploader"))
    (stored,) = blob_files(app)
    assert stored.read_bytes() == content
    data_dir = app.extensions["mri"].settings.data_dir
    assert stored.is_relative_to(data_dir / "blobs")
    assert not any(tmp_path.parent.rglob("outside.png"))
