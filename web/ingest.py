"""Turn an upload (files with relative paths, or zips) into stored blobs and Job/Scan rows.

Everything is staged under DATA_DIR/tmp first and checked as a whole; a request
refused for any reason (no files, a zip that escapes its folder, holds links or
other zips, or expands past the limits) leaves no blob, no row and no staging
folder behind. Files are stored by content hash, so no client-given name ever
becomes a file system path; names only become (length-capped) database text.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from config.settings import Settings
from db.models import AuditEvent, Job, Scan, User
from web.blobs import BlobStager, StagedBlob, UnsafePath, clean_text, clean_upload_path, zip_member_path
from web.deidentify import DeidentificationError, NotDicomError, deid_salt, deidentify_dicom
from web.errors import ApiError

logger = logging.getLogger(__name__)

# Operating-system litter that is never a scan; everything else becomes a scan,
# and files the decoder cannot read fail with a reason in the worker.
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", ".directory"})
JUNK_DIRS = frozenset({"__macosx", ".git", ".svn"})
# Zip bombs: a member may not expand more than this ratio once it is past 1 MiB,
# and a whole zip may not expand past this multiple of MAX_UPLOAD_MB.
MAX_ZIP_RATIO = 100
RATIO_FLOOR_BYTES = 1024 * 1024
ZIP_EXPANSION_FACTOR = 4
DICOM_SUFFIXES = (".dcm", ".dicom")
# zipfile builds an object per central-directory entry before any of them can be checked,
# so the entries are counted first: at most this many per MAX_ZIP_FILES (folders count too).
ZIP_ENTRIES_PER_FILE = 2
STUDY_CHARS = 255  # scans.study is String(255)
_EOCD, _EOCD64_LOCATOR, _EOCD64, _CENTRAL_ENTRY = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06", b"PK\x01\x02"
_EOCD_SIZE, _EOCD64_SIZE, _EOCD64_LOCATOR_SIZE, _CENTRAL_ENTRY_SIZE = 22, 56, 20, 46
_DEFLATED_DICOM = "1.2.840.10008.1.2.1.99"
# The decoder reads these formats before it tries DICOM; any other file may be DICOM, preamble or not.
_IMAGE_MAGICS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")
# A deflated DICOM data set may inflate to this many bytes per allowed pixel (as in training/decode.py).
_DEFLATED_BYTES_PER_PIXEL = 8


@dataclass
class IncomingFile:
    """One file of an upload: its cleaned relative path and its staged content (None: not stored)."""

    path: str
    blob: StagedBlob | None
    error: str = ""  # why it was not stored (a DICOM file that cannot be de-identified)
    sha256: str = ""  # of the content as sent, when it was not stored
    sent_sha256: str = ""  # of the content as sent, when it was stored changed (de-identified)


@dataclass
class ScanSpec:
    """What becomes one Scan row."""

    path: str
    sha256: str
    frame: int
    study: str
    error: str = ""  # set: the scan is failed at once with this reason
    sent_sha256: str = ""  # the file's hash as sent, when its stored content differs


def is_junk(path: str) -> bool:
    """True for desktop litter (.DS_Store, Thumbs.db, AppleDouble '._x', __MACOSX/) that is skipped."""
    parts = PurePosixPath(path).parts
    if not parts:
        return True
    name = parts[-1].lower()
    return name in JUNK_NAMES or name.startswith("._") or any(p.lower() in JUNK_DIRS for p in parts[:-1])


def top_folder(path: str) -> str:
    """The first folder of a relative path, or '' for a bare file name."""
    parts = PurePosixPath(path).parts
    return parts[0] if len(parts) > 1 else ""


def stage_uploads(files: Sequence[FileStorage], paths: Sequence[str], settings: Settings,
                  stager: BlobStager) -> list[IncomingFile]:
    """Stage multipart files (zips expanded) and return them with their relative paths."""
    if paths and len(paths) != len(files):
        raise ApiError(400, "bad_request",
                       f"got {len(files)} files but {len(paths)} paths; send one `paths` value per file")
    incoming: list[IncomingFile] = []
    budget = _ZipBudget(settings)
    deid = _deidentifier(settings)
    for index, upload in enumerate(files):
        raw = paths[index] if paths else (upload.filename or "")
        path = clean_upload_path(raw) or clean_upload_path(upload.filename or "") or f"file-{index + 1}"
        if is_junk(path):
            continue
        if path.lower().endswith(".zip"):
            parent = str(PurePosixPath(path).parent)
            incoming.extend(expand_zip(upload.stream, "" if parent == "." else parent, stager, budget, deid))
        else:
            incoming.append(_stage(stager, upload.stream, path, deid))
    return incoming


@dataclass(frozen=True)
class _Deidentify:
    """What de-identifying DICOM files on ingest needs (DICOM_DEIDENTIFY)."""

    salt: bytes
    max_inflated_bytes: int


def _deidentifier(settings: Settings) -> _Deidentify | None:
    if not settings.dicom_deidentify:
        return None
    return _Deidentify(deid_salt(settings.secret_key), settings.max_image_pixels * _DEFLATED_BYTES_PER_PIXEL)


def _stage(stager: BlobStager, stream: BinaryIO, path: str, deid: _Deidentify | None,
           limit: int | None = None) -> IncomingFile:
    """Stage one file; with DICOM_DEIDENTIFY a DICOM file is stored de-identified, or not at all."""
    if deid is None or _plain_image(stream):
        return IncomingFile(path, stager.add(stream, limit=limit))
    data = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise OverflowError(f"more than {limit} bytes")
    sent_sha256 = hashlib.sha256(data).hexdigest()
    try:
        data = deidentify_dicom(data, deid.salt, max_inflated_bytes=deid.max_inflated_bytes).data
    except NotDicomError:
        pass  # not DICOM either: stored as sent, and the worker fails it with its reason
    except DeidentificationError as exc:  # never stored: its scan is failed with the reason
        return IncomingFile(path, None, error=f"not stored: {exc}", sha256=sent_sha256)
    blob = stager.add(io.BytesIO(data))
    return IncomingFile(path, blob, sent_sha256=sent_sha256 if blob.sha256 != sent_sha256 else "")


def _plain_image(stream: BinaryIO) -> bool:
    """True for a JPEG, PNG, BMP or TIFF file, which holds no DICOM header; the stream is rewound."""
    head = stream.read(132)
    stream.seek(0)
    # "DICM" at 128 wins: a DICOM preamble may itself be a TIFF header.
    return head[128:132] != b"DICM" and head.startswith(_IMAGE_MAGICS)


class _ZipBudget:
    """Limits shared by every zip of one request."""

    def __init__(self, settings: Settings) -> None:
        self.max_files = settings.max_zip_files
        self.max_bytes = settings.max_upload_bytes * ZIP_EXPANSION_FACTOR
        self.files = 0
        self.bytes = 0


def expand_zip(stream: BinaryIO, prefix: str, stager: BlobStager, budget: _ZipBudget,
               deid: _Deidentify | None = None) -> list[IncomingFile]:
    """Check every member's name, type and size first, then stage the members."""
    _check_entry_count(stream, ZIP_ENTRIES_PER_FILE * budget.max_files)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ApiError(400, "bad_zip", f"the .zip file cannot be read: {exc}") from None
    with archive:
        members = _checked_members(archive, budget)
        incoming = []
        for info, rel in members:
            # Both parts are clean; cleaning the join caps its length for scans.path.
            path = clean_upload_path(f"{prefix}/{rel}") if prefix else rel
            try:
                with archive.open(info) as member:
                    incoming.append(_stage(stager, member, path, deid, limit=info.file_size))
            except (zipfile.BadZipFile, zlib.error, EOFError, OverflowError, NotImplementedError) as exc:
                raise ApiError(400, "bad_zip", f"zip member {info.filename!r} is corrupt: {exc}") from None
            except RuntimeError as exc:  # zipfile says "File ... is encrypted"
                raise ApiError(400, "bad_zip", f"zip member {info.filename!r}: {exc}") from None
    return incoming


def _check_entry_count(stream: BinaryIO, max_entries: int) -> None:
    """Refuse a zip whose central directory lists more than max_entries, reading only entry headers."""
    located = _central_directory(stream)
    if located is not None:
        start, size = located
        stream.seek(start)
        entries = done = 0
        while done + _CENTRAL_ENTRY_SIZE <= size:
            header = stream.read(_CENTRAL_ENTRY_SIZE)
            if len(header) < _CENTRAL_ENTRY_SIZE or not header.startswith(_CENTRAL_ENTRY):
                break  # damaged: zipfile says how
            entries += 1
            if entries > max_entries:
                raise ApiError(413, "zip_too_many_files",
                               f"the zip lists more than {max_entries} entries (files and folders; "
                               f"MAX_ZIP_FILES allows {max_entries // ZIP_ENTRIES_PER_FILE} files)")
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", header, 28)
            skip = name_len + extra_len + comment_len
            stream.seek(skip, os.SEEK_CUR)
            done += _CENTRAL_ENTRY_SIZE + skip
    stream.seek(0)


def _central_directory(stream: BinaryIO) -> tuple[int, int] | None:
    """(offset, size) of a zip's central directory from its end records (as zipfile finds it), or None."""
    end = stream.seek(0, os.SEEK_END)
    tail_start = max(0, end - _EOCD_SIZE - 0xFFFF)  # the record may be followed by a 64 KiB comment
    stream.seek(tail_start)
    tail = stream.read()
    at = tail.rfind(_EOCD)
    if at < 0 or at + _EOCD_SIZE > len(tail):
        return None
    record = tail_start + at
    (size,) = struct.unpack_from("<I", tail, at + 12)
    top = record
    locator = at - _EOCD64_LOCATOR_SIZE
    if locator >= 0 and tail[locator:locator + 4] == _EOCD64_LOCATOR:
        top = record - _EOCD64_LOCATOR_SIZE - _EOCD64_SIZE
        stream.seek(top)
        zip64 = stream.read(_EOCD64_SIZE)
        if len(zip64) < _EOCD64_SIZE or not zip64.startswith(_EOCD64):
            return None
        (size,) = struct.unpack_from("<Q", zip64, 40)
    if size > top:
        return None
    return top - size, size


def _checked_members(archive: zipfile.ZipFile, budget: _ZipBudget) -> list[tuple[zipfile.ZipInfo, str]]:
    members = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        try:
            rel = zip_member_path(info.filename)
        except UnsafePath as exc:
            raise ApiError(400, "unsafe_zip", str(exc)) from None
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ApiError(400, "unsafe_zip", f"zip member {info.filename!r} is a symbolic link")
        if not rel or is_junk(rel):
            continue
        if rel.lower().endswith(".zip"):
            raise ApiError(400, "nested_zip", f"zip member {info.filename!r} is itself a zip; zips inside a "
                                              "zip are not expanded: unzip it first or upload it on its own")
        if info.flag_bits & 0x1:
            raise ApiError(400, "bad_zip", f"zip member {info.filename!r} is encrypted")
        budget.files += 1
        budget.bytes += info.file_size
        if budget.files > budget.max_files:
            raise ApiError(413, "zip_too_many_files",
                           f"the zip holds more than MAX_ZIP_FILES={budget.max_files} files")
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
            raise ApiError(413, "zip_bomb", f"zip member {info.filename!r} expands more than "
                                            f"{MAX_ZIP_RATIO}x ({info.compress_size} -> {info.file_size} bytes)")
        if budget.bytes > budget.max_bytes:
            raise ApiError(413, "zip_too_large",
                           f"the zip expands past {budget.max_bytes // (1024 * 1024)} MB "
                           f"({ZIP_EXPANSION_FACTOR} x MAX_UPLOAD_MB)")
        members.append((info, rel))
    return members


def probe_dicom(path: Path, name: str, max_pixels: int | None = None) -> tuple[int, str]:
    """(frame count, StudyInstanceUID) from a DICOM header; (1, '') for anything that is not DICOM.

    A file declaring more than max_pixels pixels over all its frames counts as one
    frame: it becomes one scan that the worker fails with the reason, not one per frame.
    """
    with open(path, "rb") as fh:
        head = fh.read(132)
    looks_dicom = head[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)
    if not looks_dicom:
        return 1, ""
    import pydicom  # only needed for DICOM uploads

    try:
        if _deflated(path, head):
            return 1, ""  # pydicom would inflate it whole here; the worker inflates it bounded
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["NumberOfFrames", "StudyInstanceUID", "Rows", "Columns"])
        frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
        study = clean_text(str(ds.get("StudyInstanceUID", "") or "")).strip()
        pixels = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * frames
    except Exception as exc:  # a broken header is the worker's to report, as a failed scan
        logger.debug("DICOM header probe failed for %s: %s", name, exc)
        return 1, ""
    if max_pixels is not None and pixels > max_pixels:
        frames = 1
    return frames, study[:STUDY_CHARS]


def _deflated(path: Path, head: bytes) -> bool:
    """True when a DICOM file's data set is deflated (or its file meta cannot be read before it)."""
    from pydicom.filereader import read_file_meta_info

    if head[128:132] != b"DICM":
        return head[:2] == b"\x02\x00"  # file meta without a preamble: not worth the risk
    return str(read_file_meta_info(path).get("TransferSyntaxUID", "")) == _DEFLATED_DICOM


def plan_scans(incoming: Iterable[IncomingFile], max_scans: int,
               max_pixels: int | None = None) -> list[ScanSpec]:
    """One ScanSpec per file, or per frame of a multi-frame DICOM, with its study key."""
    specs: list[ScanSpec] = []
    probed: dict[str, tuple[int, str]] = {}
    for item in incoming:
        if item.blob is None:  # not stored: one scan, failed at once
            sha, (frames, study_uid) = item.sha256, (1, "")
        else:
            sha = item.blob.sha256
            if sha not in probed:
                probed[sha] = probe_dicom(item.blob.path, item.path, max_pixels)
            frames, study_uid = probed[sha]
        if len(specs) + frames > max_scans:
            raise ApiError(413, "too_many_scans",
                           f"this request would create more than {max_scans} scans (MAX_ZIP_FILES)")
        study = (study_uid or top_folder(item.path))[:STUDY_CHARS]
        specs.extend(ScanSpec(item.path, sha, frame, study, item.error, item.sent_sha256)
                     for frame in range(frames))
    return specs


def add_scans(session: Session, job: Job, specs: Sequence[ScanSpec]) -> list[Scan]:
    """Add scan rows to a job; a re-sent identical file is skipped, a different one under a taken path renamed."""
    taken = {(path, frame): sha for path, frame, sha in session.execute(
        select(Scan.path, Scan.frame, Scan.sha256).where(Scan.job_id == job.id))}
    renamed: dict[tuple[str, str], str] = {}
    added = []
    for spec in specs:
        path = renamed.get((spec.path, spec.sha256), spec.path)
        if taken.get((path, spec.frame)) == spec.sha256:
            continue
        if (path, spec.frame) in taken:
            path = _free_path(spec.path, spec.frame, taken)
            renamed[(spec.path, spec.sha256)] = path
        taken[(path, spec.frame)] = spec.sha256
        scan = Scan(job_id=job.id, sha256=spec.sha256, frame=spec.frame, path=path,
                    study=spec.study, status="failed" if spec.error else "queued", error=spec.error,
                    sent_sha256=spec.sent_sha256 or None)
        session.add(scan)
        added.append(scan)
    _name_for_every_part(job, {path for path, _ in taken})
    session.flush()
    return added


def _name_for_every_part(job: Job, paths: set[str]) -> None:
    """A job grown by parts keeps the name its first part gave only while that is still true: once
    its files span several top folders it is named as one request of them all would be (job_name)."""
    tops = {top_folder(path) for path in paths}
    if len(tops) > 1 and (job.name in tops or job.name in paths or _COUNT_NAME.fullmatch(job.name or "")):
        job.name = count_name(len(paths))


def _free_path(path: str, frame: int, taken: dict[tuple[str, int], str]) -> str:
    stem, dot, suffix = path.rpartition(".")
    if not dot or "/" in suffix:
        stem, suffix = path, ""
    n = 2
    while True:
        candidate = f"{stem}~{n}.{suffix}" if suffix else f"{stem}~{n}"
        if (candidate, frame) not in taken:
            return candidate
        n += 1


def create_job(session: Session, user: User | None, specs: Sequence[ScanSpec], *, sealed: bool,
               source: str, name: str) -> tuple[Job, list[Scan]]:
    """Create a job with its scans (not committed)."""
    job = Job(user_id=user.id if user else None, source=source, name=name[:255], sealed=sealed,
              status="queued", status_detail="")
    session.add(job)
    session.flush()
    scans = add_scans(session, job, specs)
    job.total = len(scans)
    session.add(AuditEvent(user_id=job.user_id, action="job.create", target=f"job:{job.id}",
                           detail={"scans": len(scans), "sealed": sealed, "source": source}))
    return job, scans


_COUNT_NAME = re.compile(r"\d+ files")


def count_name(files: int) -> str:
    """The name of a job of several top folders: '12 files' (_COUNT_NAME recognises it)."""
    return f"{files} files"


def job_name(incoming: Sequence[IncomingFile], files: Sequence[FileStorage]) -> str:
    """A short human name for a job: its top folder, else the first file name."""
    tops = {top_folder(item.path) for item in incoming}
    if len(tops) == 1 and "" not in tops:
        return tops.pop()
    if len(files) == 1 and files[0].filename:
        return clean_upload_path(files[0].filename)
    return count_name(len(incoming))
