"""Requests wrong as a whole get a JSON error with the right status and write nothing."""
from __future__ import annotations

import io
import stat
import zipfile

import pytest
from sqlalchemy import func, select

from db.models import Job, Scan
from web_helpers import blob_files, leftovers, png_bytes, upload_data


def assert_nothing_written(app, session) -> None:
    assert session.scalar(select(func.count(Job.id))) == 0
    assert session.scalar(select(func.count(Scan.id))) == 0
    assert blob_files(app) == []
    assert [p for p in leftovers(app) if p.is_file() or p.name.startswith("stage-")] == []


def make_zip(members: list[tuple[str, bytes]], *, symlink: str | None = None,
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, content in members:
            archive.writestr(name, content)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return out.getvalue()


def post_zip(client, headers, content: bytes, name: str = "upload.zip"):
    return client.post("/api/v1/jobs", data={"files": [(io.BytesIO(content), name)]}, headers=headers)


def check_error(response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "detail"} and body["detail"]
    if error:
        assert body["error"] == error
    return body


def test_no_files_is_400(client, auth, app, session):
    check_error(client.post("/api/v1/jobs", data={"paths": ["a.png"]}, content_type="multipart/form-data",
                            headers=auth("uploader")), 400, "no_files")
    check_error(client.post("/api/v1/jobs", data={"files": [(io.BytesIO(b""), "")]}, headers=auth("uploader")), 400)
    assert_nothing_written(app, session)


def test_only_system_litter_is_400(client, auth, app, session):
    files = [("x/.DS_Store", b"junk"), ("Thumbs.db", b"junk"), ("__MACOSX/x/._a.png", b"junk")]
    check_error(client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader")), 400, "no_files")
    assert_nothing_written(app, session)


def test_not_multipart_is_415(client, auth, app, session):
    check_error(client.post("/api/v1/jobs", json={"files": ["a.png"]}, headers=auth("uploader")), 415)
    check_error(client.post("/api/v1/jobs", data=b"raw bytes", content_type="application/octet-stream",
                            headers=auth("uploader")), 415)
    assert_nothing_written(app, session)


def test_too_large_is_413(client, auth, app, session):
    big = b"\xff" * (2 * 1024 * 1024 + 10)  # MAX_UPLOAD_MB=2 in these tests
    body = check_error(client.post("/api/v1/jobs", data=upload_data([("a/big.png", big)]),
                                   headers=auth("uploader")), 413, "payload_too_large")
    assert "MAX_UPLOAD_MB" in body["detail"]
    assert_nothing_written(app, session)


def test_mismatched_paths_is_400(client, auth, app, session):
    data = upload_data([("a/1.png", png_bytes(1)), ("a/2.png", png_bytes(2))])
    data["paths"] = ["a/1.png"]
    check_error(client.post("/api/v1/jobs", data=data, headers=auth("uploader")), 400)
    assert_nothing_written(app, session)


@pytest.mark.parametrize("member", ["../escape.png", "a/../../escape.png", "/etc/cron.d/x.png",
                                    "C:/windows/x.png", "..\\evil.png"])
def test_zip_slip_is_400(client, auth, app, session, member):
    content = make_zip([("ok/1.png", png_bytes(1)), (member, png_bytes(2))])
    check_error(post_zip(client, auth("uploader"), content), 400, "unsafe_zip")
    assert_nothing_written(app, session)
    assert not (app.extensions["mri"].settings.data_dir.parent / "escape.png").exists()


def test_zip_symlink_is_400(client, auth, app, session):
    content = make_zip([("ok/1.png", png_bytes(1))], symlink="ok/link.png")
    check_error(post_zip(client, auth("uploader"), content), 400, "unsafe_zip")
    assert_nothing_written(app, session)


def test_zip_bomb_is_413(client, auth, app, session):
    content = make_zip([("ok/1.png", png_bytes(1)), ("ok/bomb.dcm", b"\0" * (8 * 1024 * 1024))])
    assert len(content) < 100_000
    check_error(post_zip(client, auth("uploader"), content), 413, "zip_bomb")
    assert_nothing_written(app, session)


def test_zip_expanding_past_total_limit_is_413(client, auth, app, session):
    # Members under the 1 MiB floor of the ratio check that add up past 4 x MAX_UPLOAD_MB (8 MB).
    content = make_zip([(f"s/{i}.png", b"\x01" * (900 * 1024)) for i in range(10)])
    assert len(content) < 2 * 1024 * 1024
    check_error(post_zip(client, auth("uploader"), content), 413, "zip_too_large")
    assert_nothing_written(app, session)


def test_zip_with_too_many_files_is_413(client, auth, app, session):
    content = make_zip([(f"s/{i}.png", bytes([i % 256])) for i in range(41)])  # MAX_ZIP_FILES=40
    check_error(post_zip(client, auth("uploader"), content), 413, "zip_too_many_files")
    assert_nothing_written(app, session)


def test_not_a_zip_is_400(client, auth, app, session):
    check_error(post_zip(client, auth("uploader"), b"PK\x03\x04 truncated"), 400, "bad_zip")
    assert_nothing_written(app, session)


def test_corrupt_zip_member_is_400_and_leaves_nothing(client, auth, app, session):
    content = bytearray(make_zip([("s/a.png", png_bytes(1)), ("s/b.png", png_bytes(2))],
                                 compression=zipfile.ZIP_STORED))
    at = content.find(png_bytes(2)[40:60])
    content[at:at + 20] = b"\0" * 20  # CRC mismatch in the second member, after the first was staged
    check_error(post_zip(client, auth("uploader"), bytes(content)), 400, "bad_zip")
    assert_nothing_written(app, session)
