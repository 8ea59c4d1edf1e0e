"""`submit`: send files to a job in parts, resume an interrupted upload, seal the job.

An upload that stops half-way (network gone, Ctrl-C, the service down longer than the
retries) leaves its job open and a small state file naming it. Running the same command
again asks the job which files it holds (GET /api/v1/jobs/<id>/files: paths and SHA-256 of
the bytes as sent) and sends only the others; `--resume JOB` does the same for a job named
by hand. The service also skips a file it already holds under the same path, so a part
sent twice (a retry after a lost answer) never adds anything twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

from client.api import Api, ApiError
from client.files import LocalFile

DEFAULT_PART_FILES = 50
DEFAULT_PART_MB = 16
# Per-file refusals: splitting the part finds the file and the rest goes on.
SPLITTABLE = frozenset({"payload_too_large", "unsafe_zip", "nested_zip", "bad_zip", "zip_bomb", "zip_too_large",
                        "zip_too_many_files", "too_many_scans", "bad_request"})


def state_dir(environ: Mapping[str, str]) -> Path:
    """MRI_STATE_DIR, else $XDG_STATE_HOME/mri-classify (~/.local/state/mri-classify)."""
    if environ.get("MRI_STATE_DIR"):
        return Path(environ["MRI_STATE_DIR"]).expanduser()
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "mri-classify"


@dataclass
class UploadState:
    """The file that remembers an unfinished upload of these sources to this service."""

    path: Path

    @classmethod
    def for_upload(cls, folder: Path, url: str, sources: list[str]) -> "UploadState":
        """One state file per (service, set of sources named)."""
        key = "\n".join([url, *sorted(str(Path(s).resolve()) for s in sources)])
        return cls(folder / "uploads" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json")

    def job(self) -> int | None:
        """The job of the unfinished upload, if there is one."""
        try:
            return int(json.loads(self.path.read_text())["job"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remember(self, url: str, job: int, sources: list[str]) -> None:
        """Note that `job` holds part of this upload."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        record = {"url": url, "job": job, "sources": [str(Path(s).resolve()) for s in sources],
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, self.path)

    def forget(self) -> None:
        """The upload finished (or its job is gone)."""
        self.path.unlink(missing_ok=True)


def missing_files(files: list[LocalFile], held: list[dict]) -> list[LocalFile]:
    """The files a job does not hold yet: first matched by (path, hash), then by hash alone (the
    service cleans odd paths), each held file matching one local file."""
    by_both = Counter((f["path"], f["sent_sha256"]) for f in held)
    by_hash = Counter(f["sent_sha256"] for f in held)
    unmatched = []
    for file in files:
        if by_both[(file.path, file.sha256)] > 0:
            by_both[(file.path, file.sha256)] -= 1
            by_hash[file.sha256] -= 1
        else:
            unmatched.append(file)
    missing = []
    for file in unmatched:
        if by_hash[file.sha256] > 0:
            by_hash[file.sha256] -= 1
        else:
            missing.append(file)
    return missing


def parts(files: list[LocalFile], max_files: int, max_bytes: int) -> Iterator[list[LocalFile]]:
    """Consecutive groups of at most max_files files and max_bytes bytes (a bigger file goes alone)."""
    part: list[LocalFile] = []
    size = 0
    for file in files:
        if part and (len(part) >= max_files or size + file.size > max_bytes):
            yield part
            part, size = [], 0
        part.append(file)
        size += file.size
    if part:
        yield part


@dataclass
class Outcome:
    """What an upload did."""

    job: int
    sent: int = 0
    already: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


class Uploader:
    """Sends files to a job (a new one, or the one an unfinished upload left) and seals it."""

    def __init__(self, api: Api, part_files: int = DEFAULT_PART_FILES, part_mb: float = DEFAULT_PART_MB,
                 say: Callable[[str], None] = lambda _: None,
                 progress: Callable[[int, int], None] = lambda files, size: None) -> None:
        """`progress(files, bytes)` is called as each part is stored."""
        self.api, self.part_files, self.part_bytes = api, part_files, int(part_mb * 1024 * 1024)
        self.say, self.progress = say, progress

    def held(self, job: int) -> dict:
        """GET /api/v1/jobs/<job>/files."""
        return self.api.get_json(f"/api/v1/jobs/{job}/files")

    def send(self, files: list[LocalFile], job: int | None, on_job: Callable[[int], None]) -> Outcome:
        """Send `files` (to `job`, else to a new open job: on_job(id) is called as soon as it exists)."""
        outcome = Outcome(job=job or 0)
        for part in parts(files, self.part_files, self.part_bytes):
            self._send_part(part, outcome, on_job)
        return outcome

    def _send_part(self, part: list[LocalFile], outcome: Outcome, on_job: Callable[[int], None]) -> None:
        form = [("paths", (None, f.path)) for f in part]
        form += [("files", (Path(f.path).name or "file", f.read(), "application/octet-stream")) for f in part]
        try:
            if outcome.job:
                self.api.request("POST", f"/api/v1/jobs/{outcome.job}/files", files=form)
            else:
                # Not retried once the service may have made the job: a second one would be left open.
                answer = self.api.request("POST", "/api/v1/jobs", params={"open": "1"}, files=form,
                                          idempotent=False).json()
                outcome.job = answer["id"]
                on_job(outcome.job)
        except ApiError as exc:
            if exc.error not in SPLITTABLE:
                raise
            if len(part) > 1:  # find the file it is about; the others go through
                half = len(part) // 2
                self._send_part(part[:half], outcome, on_job)
                self._send_part(part[half:], outcome, on_job)
                return
            outcome.refused.append((part[0].path, f"{exc.error}: {exc.detail}"))
            self.say(f"refused {part[0].path}: {exc.error}: {exc.detail}")
            self.progress(1, part[0].size)
            return
        outcome.sent += len(part)
        self.progress(len(part), sum(f.size for f in part))

    def close(self, job: int) -> dict:
        """Seal the job; a job already sealed (a retried close whose answer was lost) is fine."""
        response = self.api.request("POST", f"/api/v1/jobs/{job}/close", ok=(409,))
        if response.status_code == 409:
            return self.api.get_json(f"/api/v1/jobs/{job}")
        return response.json()
