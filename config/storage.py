"""Where stored files live: one content-addressed layout shared by the web (writes) and workers (reads)."""
from __future__ import annotations

import re
from pathlib import Path

_SHA256 = re.compile(r"[0-9a-f]{64}")


def blob_path(uploads_dir: Path, sha256: str) -> Path:
    """Where a blob with this SHA-256 lives: <uploads_dir>/<sha[:2]>/<sha> (refuses non-digests)."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return Path(uploads_dir) / sha256[:2] / sha256
