"""What `submit` sends: the files of folders, zips and loose files, each with the relative path the
service groups studies by, and its SHA-256 (how a resumed upload knows what the job already has)."""
from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# The same desktop litter the service skips (web/ingest.py), so a resumed upload does not send it
# again each time only to have it skipped.
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", ".directory"})
JUNK_DIRS = frozenset({"__macosx", ".git", ".svn"})


class InputError(Exception):
    """A named file or folder cannot be read, or a zip holds something the service would refuse."""


@dataclass
class LocalFile:
    """One file to send: its relative path, where to read it, its size; the hash once computed."""

    path: str
    source: Path
    member: str | None = None  # a zip member's name, when the file is inside a zip
    size: int = 0
    _sha256: str | None = field(default=None, repr=False)

    def read(self) -> bytes:
        """The file's bytes."""
        if self.member is None:
            return self.source.read_bytes()
        return _open_zip(self.source).read(self.member)

    @property
    def sha256(self) -> str:
        """SHA-256 of the bytes (computed once)."""
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.read()).hexdigest()
        return self._sha256


@functools.lru_cache(maxsize=4)
def _open_zip(path: Path) -> zipfile.ZipFile:
    # Opening reads the whole central directory: once per zip, not once per member.
    return zipfile.ZipFile(path)


def is_junk(path: str) -> bool:
    """Desktop litter (.DS_Store, Thumbs.db, AppleDouble `._x`, __MACOSX/) the service would skip."""
    parts = PurePosixPath(path).parts
    name = parts[-1].lower() if parts else ""
    return not parts or name in JUNK_NAMES or name.startswith("._") or any(p.lower() in JUNK_DIRS for p in parts[:-1])


def _folder(root: Path) -> list[LocalFile]:
    """Every file under `root`, its path starting with the folder's own name (the study)."""
    top = root.resolve().name
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            full = Path(folder) / name
            rel = PurePosixPath(top, *full.relative_to(root).parts).as_posix()
            if full.is_file() and not is_junk(rel):
                found.append(LocalFile(rel, full, size=full.stat().st_size))
    return found


def _zip(archive_path: Path) -> list[LocalFile] | None:
    """The members of a zip, with the paths they have inside it (as the service expands a zip);
    None when it cannot be expanded here (unreadable, a member leaving its folder, a nested zip)."""
    found = []
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for info in archive.infolist():
                name = info.filename.replace("\\", "/")
                if info.is_dir() or is_junk(name):
                    continue
                parts = PurePosixPath(name).parts
                if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
                    return None
                if name.lower().endswith(".zip"):
                    return None
                found.append(LocalFile(name, archive_path, member=info.filename, size=info.file_size))
    except (zipfile.BadZipFile, OSError):
        return None
    return found


def collect(arguments: list[str]) -> list[LocalFile]:
    """The files named: a folder's files keep paths under the folder's name, a zip's members their
    paths inside it, a loose file its name."""
    files: list[LocalFile] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            files += _folder(path)
        elif path.is_file() and path.suffix.lower() == ".zip":
            members = _zip(path)
            # A zip that cannot be expanded here goes whole, as the upload page sends it: the
            # service refuses it with its own reason, reported at the end (exit 5), and the
            # other files still go through.
            files += members if members is not None else [LocalFile(path.name, path, size=path.stat().st_size)]
        elif path.is_file():
            if not is_junk(path.name):
                files.append(LocalFile(path.name, path, size=path.stat().st_size))
        else:
            raise InputError(f"{argument}: no such file or folder")
    return files
