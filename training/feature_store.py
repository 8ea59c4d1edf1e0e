"""A backbone-feature store that outlives a training run: one .npy file per image and view.

A retrain recomputes ResNet50/VGG16 features only for images it has not seen with the same
backbone. An entry is found by a namespace (architecture, a fingerprint of the backbone's
actual weight arrays, image size, and which view: clean, or augmentation seed + view number
+ augmentation parameters) and a key (the image's content SHA-256 and frame). Any change to
the bytes, the weights, the size or the augmentation therefore lands on another file: nothing
is ever invalidated in place, stale entries are simply never read again and age out.

Safety: every file is written to a temporary name and renamed into place (a crashed writer
leaves at most a temporary file, which prune removes); a file that does not load as a float32
vector of the namespace's width is treated as a miss and deleted. Size: prune() deletes the
least recently used entries (hits refresh the file's mtime) until the store is under its bound;
deleting the whole folder at any time is safe too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from models.preprocessing_record import PREPROCESSING_VERSION

log = logging.getLogger(__name__)

# Bumped when the store's layout changes; a change to decoding, resizing or normalisation
# bumps PREPROCESSING_VERSION, which is part of every namespace too.
STORE_FORMAT = 1
_SUFFIX = ".npy"
_TMP_MARK = ".tmp-"
# A temporary file older than this belongs to a writer that died.
STALE_TMP_S = 3600.0


def weights_fingerprint(model) -> str:
    """SHA-256 over the shapes and bytes of every weight array of a Keras model, in order.

    The identity of the backbone as used: ImageNet, a file, or a (seeded) random initialisation
    all hash to what the network will actually compute with.
    """
    import keras

    digest = hashlib.sha256()
    for weight in model.weights:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def entry_key(sha256: str, frame: int) -> str:
    """The key of one decoded image: content hash and frame number."""
    return f"{sha256}-{int(frame)}"


@dataclass
class StoreCounts:
    """What one pass found and wrote."""

    hits: int = 0
    computed: int = 0
    dropped_corrupt: int = 0


class Namespace:
    """The entries of one (arch, weights fingerprint, image size, view) combination."""

    def __init__(self, folder: Path, dim: int) -> None:
        """Entries under `folder`, each a float32 vector of length `dim`."""
        self.folder, self.dim = folder, dim
        self.counts = StoreCounts()

    def _path(self, key: str) -> Path:
        # Two-character fan-out keeps folders small on file systems that dislike huge ones.
        return self.folder / key[:2] / f"{key}{_SUFFIX}"

    def get(self, keys: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Rows for `keys` ([len(keys), dim], zeros where missing) and the indices of the misses."""
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        missing: list[int] = []
        now = time.time()
        for index, key in enumerate(keys):
            vector = self._read(self._path(key), now)
            if vector is None:
                missing.append(index)
            else:
                out[index] = vector
        self.counts.hits += len(keys) - len(missing)
        return out, missing

    def _read(self, path: Path, now: float) -> np.ndarray | None:
        try:
            vector = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            vector = None
        if vector is None or vector.dtype != np.float32 or vector.shape != (self.dim,):
            log.warning("dropping unreadable feature cache entry %s", path)
            self.counts.dropped_corrupt += 1
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path, (now, now))  # least recently used goes first when pruning
        except OSError:
            pass
        return vector

    def put(self, keys: Sequence[str], rows: np.ndarray) -> None:
        """Write one entry per key (atomically: a temporary file renamed into place)."""
        for key, row in zip(keys, rows):
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
            with open(tmp, "wb") as handle:
                np.save(handle, np.asarray(row, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, path)
        self.counts.computed += len(keys)


class FeatureStore:
    """Persistent backbone features under one folder, bounded by `max_bytes` (see prune)."""

    def __init__(self, root: str | Path, max_bytes: int) -> None:
        """A store in `root` (created on first write) holding at most about `max_bytes`."""
        self.root, self.max_bytes = Path(root), int(max_bytes)

    def namespace(self, arch: str, fingerprint: str, image_size: int, view: dict, dim: int) -> Namespace:
        """The entries for one backbone, size and view; its identity is written beside them."""
        identity = {"format": STORE_FORMAT, "preprocessing": PREPROCESSING_VERSION, "arch": arch,
                    "weights_sha256": fingerprint, "image_size": int(image_size), "view": view, "dim": int(dim)}
        name = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
        folder = self.root / name
        about = folder / "namespace.json"
        if not about.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"namespace.json{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.write_text(json.dumps(identity, indent=1, sort_keys=True))
            os.replace(tmp, about)
        return Namespace(folder, int(dim))

    def prune(self, max_bytes: int | None = None) -> dict[str, int]:
        """Delete dead writers' temporary files, then the least recently used entries until the
        store holds at most `max_bytes` (default: the store's bound); return what was done."""
        limit = self.max_bytes if max_bytes is None else int(max_bytes)
        entries: list[tuple[float, int, Path]] = []
        stale = 0
        now = time.time()
        for path in _walk_files(self.root):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if _TMP_MARK in path.name:
                if now - stat.st_mtime > STALE_TMP_S:
                    path.unlink(missing_ok=True)
                    stale += 1
                continue
            if path.suffix == _SUFFIX:
                entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        removed = 0
        if total > limit:
            for _, size, path in sorted(entries, key=lambda entry: entry[0]):
                if total <= limit:
                    break
                path.unlink(missing_ok=True)
                total -= size
                removed += 1
        if removed:
            log.info("feature cache %s: removed %d least recently used entries (now %.0f MB)",
                     self.root, removed, total / 1e6)
        return {"entries": len(entries) - removed, "bytes": total, "removed": removed, "stale_tmp": stale}


def _walk_files(root: Path) -> Iterable[Path]:
    if not root.is_dir():
        return
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            yield Path(dirpath) / name


def view_identity(seed: int | None, view: int | None, params) -> dict:
    """The namespace's 'view' part: clean, or augmentation seed, view number and parameters."""
    if view is None:
        return {"kind": "clean"}
    return {"kind": "augmented", "seed": int(seed), "view": int(view), "params": asdict(params)}
