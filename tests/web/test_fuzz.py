"""Bounded fuzzing of the upload endpoint: random multipart bodies, names, paths and zips, zero 500s.

Every answer is a 202 or a 4xx JSON {"error", "detail"}, and nothing is written outside
DATA_DIR. Derandomized and without an example database, so every run sends the same requests.
"""
from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.migrate import upgrade
from tests.helpers.bad_inputs import (
    deflated_dicom_bomb,
    dicom_bytes,
    jpeg_bytes,
    png_bytes,
    png_declaring,
    ramp16,
)
from web_helpers import build_app, upload_data

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FRAGMENTS = ["../", "..", "/", "\\", "C:", "c:\\", ".", "./", "//", ".zip", ".png", ".dcm", ".jpg", "\x00",
             "\n",
             "\r", '"', ";", "%2e%2e/", "\u202e", "😀", "Ω", "扫描", " ", "__MACOSX/", "._", ".DS_Store", "~2"]
SAMPLES = [b"", png_bytes(1, 16), jpeg_bytes(2, 16), dicom_bytes(ramp16(8)), png_declaring(40_000, 40_000),
           dicom_bytes(ramp16(8, frames=3), frames=3), deflated_dicom_bomb(64 << 20), b"plain text\n"]

STRUCTURED = "multipart/form-data; boundary=fuzzBoundary7x"
names = st.one_of(
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=10)), max_size=8).map("".join),
    st.integers(200, 1400).map(lambda n: "d" * (n // 3) + "/" + "n" * n + ".png"),
)
contents = st.one_of(st.sampled_from(SAMPLES), st.binary(max_size=300))


@st.composite
def zips(draw) -> bytes:
    """A zip built from random members: odd names, folders, symbolic links, nested zips, random bytes."""
    out = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for _ in range(draw(st.integers(0, 5))):
            info = zipfile.ZipInfo(draw(names) or "x")
            kind = draw(st.sampled_from(["file", "file", "symlink", "folder", "zip"]))
            content = draw(contents)
            if kind == "symlink":
                info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
            elif kind == "folder":
                info.filename = info.filename.rstrip("/") + "/"
                content = b""
            elif kind == "zip":
                inner = io.BytesIO()
                with zipfile.ZipFile(inner, "w") as nested:
                    nested.writestr("inner.png", SAMPLES[1])
                content = inner.getvalue()
            archive.writestr(info, content)
    data = out.getvalue()
    if draw(st.booleans()):  # a damaged archive: bytes changed or cut
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=8)) + data[cut + 8:]
    return data


def quoted(text: str) -> bytes:
    """A header parameter value the way browsers send it (UTF-8, quote and line breaks escaped)."""
    raw = text.encode("utf-8", "surrogatepass")
    return raw.replace(b'"', b"%22").replace(b"\r", b"%0D").replace(b"\n", b"%0A")


def multipart(parts: list[tuple[bytes, bytes | None, bytes]], boundary: bytes) -> bytes:
    """A multipart/form-data body from (field name, file name or None, content) parts."""
    body = b""
    for field, filename, content in parts:
        disposition = b'form-data; name="' + field + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        if filename is not None:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + content + b"\r\n"
    return body + b"--" + boundary + b"--\r\n"


@st.composite
def upload_bodies(draw) -> bytes:
    """A well-formed multipart body: files (some zips) with random names, maybe `paths`, maybe more."""
    files = draw(st.lists(st.tuples(names, st.one_of(contents, zips()), st.booleans()), min_size=1,
                          max_size=4))
    parts = [(b"files", quoted(name + (".zip" if as_zip else "")), content)
             for name, content, as_zip in files]
    paths = draw(st.one_of(st.none(), st.lists(names, min_size=len(files), max_size=len(files)),
                           st.lists(names, max_size=6)))
    parts += [(b"paths", None, quoted(path)) for path in paths or ()]
    if draw(st.integers(0, 9)) == 7:  # now and then a field the endpoint does not know
        parts.append((quoted(draw(names)), None, b"unexpected"))
    return multipart(parts, b"fuzzBoundary7x")


@st.composite
def raw_bodies(draw) -> tuple[bytes, str]:
    """A damaged multipart body (raw bytes in headers, cut or spliced) and its content type."""
    raw = st.one_of(names.map(lambda text: text.encode("utf-8", "surrogatepass")), st.binary(max_size=40))
    parts = [(b"files", draw(raw), draw(contents)) for _ in range(draw(st.integers(1, 3)))]
    parts += [(b"paths", None, draw(raw)) for _ in range(draw(st.integers(0, 3)))]
    body = multipart(parts, b"rawB")
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=30)) + body[cut + draw(st.integers(0, 20)):]
    boundary = draw(st.sampled_from(["rawB"] * 6 + ["", "x" * 80, "rawB; charset=utf-16", '"rawB"']))
    return body, f"multipart/form-data; boundary={boundary}"


def files_under(root: Path) -> set[Path]:
    """Every file below root."""
    return {p for p in root.rglob("*") if p.is_file()}


def check_answer(response) -> None:
    """A 2xx with an id, or a 4xx JSON error; never a 5xx."""
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    body = response.get_json()
    if response.status_code >= 400:
        assert set(body) == {"error", "detail"} and body["detail"], body
    else:
        assert response.status_code == 202 and body["id"], body


def assert_nothing_outside(app, tmp_path: Path, before: set[Path]) -> None:
    data_dir = app.extensions["mri"].settings.data_dir
    written = files_under(tmp_path) - before
    assert [p for p in written
            if not p.is_relative_to(data_dir) and not p.name.startswith("service.db")] == []


def _token(app) -> dict[str, str]:
    from web.auth import get_or_create_user, issue_token

    with app.extensions["mri"].session_factory() as s:
        token = issue_token(s, get_or_create_user(s, "uploader", "uploader"))
        s.commit()
    return {"Authorization": f"Bearer {token}"}


def test_fuzz_well_formed_uploads_on_postgres(tmp_path, postgres_url, broker):
    """On PostgreSQL, which refuses text longer than its column and NUL characters."""
    upgrade(postgres_url)
    app = build_app(tmp_path, postgres_url)
    try:
        client, headers = app.test_client(), _token(app)
        opened = client.post("/api/v1/jobs?open=1", data=upload_data([("seed/a.png", SAMPLES[1])]),
                             headers=headers)
        open_url = f"/api/v1/jobs/{opened.get_json()['id']}/files"
        before = files_under(tmp_path)

        @FUZZ
        @given(body=upload_bodies(), to_open_job=st.booleans())
        def one(body: bytes, to_open_job: bool) -> None:
            url = open_url if to_open_job else "/api/v1/jobs"
            check_answer(client.post(url, data=body, content_type=STRUCTURED, headers=headers))

        one()
        assert_nothing_outside(app, tmp_path, before)
    finally:
        app.extensions["mri"].engine.dispose()


def test_fuzz_damaged_multipart(client, auth, app, tmp_path):
    headers = auth("uploader")
    before = files_under(tmp_path)

    @FUZZ
    @given(request=raw_bodies())
    def one(request: tuple[bytes, str]) -> None:
        body, content_type = request
        check_answer(client.post("/api/v1/jobs", data=body, content_type=content_type, headers=headers))

    one()
    assert_nothing_outside(app, tmp_path, before)
