"""Content-addressed storage under DATA_DIR/blobs and safe relative paths for uploaded names."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from config.storage import blob_path  # the one layout the workers read too

logger = logging.getLogger(__name__)
CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# scans.path is String(1024): 1000 leaves room for the '~N' added to a repeated path.
MAX_PATH_CHARS = 1000


class UnsafePath(ValueError):
    """A zip member name that would land outside its folder."""


def clean_text(value: str) -> str:
    """Client- or file-given text without control characters (NUL included) or lone surrogates."""
    # PostgreSQL refuses NUL in text and lone surrogates cannot be encoded as UTF-8: '?' instead.
    return _CONTROL.sub("", value.encode("utf-8", "replace").decode("utf-8"))


def clean_upload_path(name: str) -> str:
    """A relative POSIX path from a client-given name: backslashes, drives, '..', '.' and '/' prefixes dropped."""
    name = clean_text(name.replace("\\", "/"))
    name = _DRIVE.sub("", name)
    path = _join_parts(name)
    if len(path) > MAX_PATH_CHARS:
        # Keep the end (the file name) of an absurdly long path; the cut may leave a
        # partial first part such as '', '.' or '..', which goes too.
        path = _join_parts(path[-MAX_PATH_CHARS:])
    return path


def _join_parts(name: str) -> str:
    parts = [p.strip() for p in name.split("/")]
    return "/".join(p for p in parts if p not in ("", ".", ".."))


def zip_member_path(name: str) -> str:
    """The relative path of a zip member, refusing names that escape the archive's folder."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise UnsafePath(f"zip member {name!r} has an absolute path")
    if any(part == ".." for part in raw.split("/")):
        raise UnsafePath(f"zip member {name!r} points outside the archive's folder")
    return clean_upload_path(raw)


@dataclass
class StagedBlob:
    """One distinct file written to the staging folder, not yet in the blob store."""

    sha256: str
    size: int
    path: Path


@dataclass
class BlobStager:
    """Writes incoming files to DATA_DIR/tmp/<id>/ first, so a refused request leaves nothing behind."""

    uploads_dir: Path
    tmp_root: Path
    staged: dict[str, StagedBlob] = field(default_factory=dict)
    placed: dict[str, Path] = field(default_factory=dict)  # SHA-256 -> blob newly stored by this request
    _dir: Path | None = None

    @property
    def directory(self) -> Path:
        """The private staging folder of this request."""
        if self._dir is None:
            self.tmp_root.mkdir(parents=True, exist_ok=True)
            self._dir = self.tmp_root / f"stage-{uuid.uuid4().hex}"
            self._dir.mkdir()
        return self._dir

    def add(self, stream: BinaryIO, limit: int | None = None) -> StagedBlob:
        """Copy a stream into staging while hashing it; the same content is kept once."""
        digest = hashlib.sha256()
        tmp = self.directory / uuid.uuid4().hex
        size = 0
        with open(tmp, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise OverflowError(f"more than {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
        sha = digest.hexdigest()
        if sha in self.staged:
            tmp.unlink()
            return self.staged[sha]
        final = self.directory / sha
        os.replace(tmp, final)
        blob = StagedBlob(sha256=sha, size=size, path=final)
        self.staged[sha] = blob
        return blob

    def commit(self) -> None:
        """Move every staged blob into the store (atomic rename); content already stored is kept as is."""
        for blob in self.staged.values():
            target = blob_path(self.uploads_dir, blob.sha256)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(blob.path, target)
            self.placed[blob.sha256] = target
        self.discard()

    def unplace(self, keep: frozenset[str] = frozenset()) -> None:
        """Remove blobs this request added to the store (used when the database commit fails).

        Digests in `keep` stay: another request may have stored rows for the same content meanwhile.
        """
        for sha, target in self.placed.items():
            if sha not in keep:
                target.unlink(missing_ok=True)
        self.placed.clear()

    def discard(self) -> None:
        """Delete the staging folder and whatever is still in it."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
