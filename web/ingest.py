"""Turn an upload (files with relative paths, or zips) into stored blobs and Job/Scan rows.

Everything is staged under DATA_DIR/tmp first and checked as a whole; a request
refused for any reason (no files, a zip that escapes its folder or expands past
the limits) leaves no blob, no row and no staging folder behind.
"""
from __future__ import annotations

import logging
import stat
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
from web.blobs import BlobStager, StagedBlob, UnsafePath, clean_upload_path, zip_member_path
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


@dataclass
class IncomingFile:
    """One file of an upload: its cleaned relative path and its staged content."""

    path: str
    blob: StagedBlob


@dataclass
class ScanSpec:
    """What becomes one Scan row."""

    path: str
    sha256: str
    frame: int
    study: str


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
    for index, upload in enumerate(files):
        raw = paths[index] if paths else (upload.filename or "")
        path = clean_upload_path(raw) or clean_upload_path(upload.filename or "") or f"file-{index + 1}"
        if is_junk(path):
            continue
        if path.lower().endswith(".zip"):
            parent = str(PurePosixPath(path).parent)
            incoming.extend(expand_zip(upload.stream, "" if parent == "." else parent, stager, budget))
        else:
            incoming.append(IncomingFile(path, stager.add(upload.stream)))
    return incoming


class _ZipBudget:
    """Limits shared by every zip of one request."""

    def __init__(self, settings: Settings) -> None:
        self.max_files = settings.max_zip_files
        self.max_bytes = settings.max_upload_bytes * ZIP_EXPANSION_FACTOR
        self.files = 0
        self.bytes = 0


def expand_zip(stream: BinaryIO, prefix: str, stager: BlobStager, budget: _ZipBudget) -> list[IncomingFile]:
    """Check every member's name, type and size first, then stage the members."""
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ApiError(400, "bad_zip", f"the .zip file cannot be read: {exc}") from None
    with archive:
        members = _checked_members(archive, budget)
        incoming = []
        for info, rel in members:
            try:
                with archive.open(info) as member:
                    blob = stager.add(member, limit=info.file_size)
            except (zipfile.BadZipFile, zlib.error, EOFError, OverflowError, NotImplementedError) as exc:
                raise ApiError(400, "bad_zip", f"zip member {info.filename!r} is corrupt: {exc}") from None
            except RuntimeError as exc:  # zipfile says "File ... is encrypted"
                raise ApiError(400, "bad_zip", f"zip member {info.filename!r}: {exc}") from None
            incoming.append(IncomingFile(f"{prefix}/{rel}" if prefix else rel, blob))
    return incoming


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


def probe_dicom(path: Path, name: str) -> tuple[int, str]:
    """(frame count, StudyInstanceUID) from a DICOM header; (1, '') for anything that is not DICOM."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    looks_dicom = head[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)
    if not looks_dicom:
        return 1, ""
    import pydicom  # only needed for DICOM uploads

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["NumberOfFrames", "StudyInstanceUID"])
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        study = str(ds.get("StudyInstanceUID", "") or "").strip()
    except Exception as exc:  # a broken header is the worker's to report, as a failed scan
        logger.debug("DICOM header probe failed for %s: %s", name, exc)
        return 1, ""
    return max(frames, 1), study[:255]


def plan_scans(incoming: Iterable[IncomingFile], max_scans: int) -> list[ScanSpec]:
    """One ScanSpec per file, or per frame of a multi-frame DICOM, with its study key."""
    specs: list[ScanSpec] = []
    probed: dict[str, tuple[int, str]] = {}
    for item in incoming:
        if item.blob.sha256 not in probed:
            probed[item.blob.sha256] = probe_dicom(item.blob.path, item.path)
        frames, study_uid = probed[item.blob.sha256]
        if len(specs) + frames > max_scans:
            raise ApiError(413, "too_many_scans",
                           f"this request would create more than {max_scans} scans (MAX_ZIP_FILES)")
        study = study_uid or top_folder(item.path)
        specs.extend(ScanSpec(item.path, item.blob.sha256, frame, study) for frame in range(frames))
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
                    study=spec.study, status="queued")
        session.add(scan)
        added.append(scan)
    session.flush()
    return added


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


def job_name(incoming: Sequence[IncomingFile], files: Sequence[FileStorage]) -> str:
    """A short human name for a job: its top folder, else the first file name."""
    tops = {top_folder(item.path) for item in incoming}
    if len(tops) == 1 and "" not in tops:
        return tops.pop()
    if len(files) == 1 and files[0].filename:
        return clean_upload_path(files[0].filename)
    return f"{len(incoming)} files"
