"""Labelled image collections (folder or zip), content-hash stratified split, and bulk loading."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import zipfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Literal, Sequence

import numpy as np

from models.backbones import file_digest
from training.decode import SUPPORTED_SUFFIXES, DecodeError, decode_bytes

logger = logging.getLogger(__name__)

ZIP_SEPARATOR = "::"
# A single member larger than this is refused: no MRI slice is that big, a zip bomb is.
MAX_MEMBER_BYTES = 512 * 1024 * 1024
_IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}


class DatasetError(ValueError):
    """A labelled collection that cannot be used (unsafe zip, no classes, bad options)."""


@dataclass(frozen=True)
class LabelledImage:
    """One labelled file: a path, or "archive.zip::member"; its class; its SHA-256.

    `frame` picks one frame of a multi-frame file (a reviewed scan is one frame); None
    takes every frame.
    """

    source: str
    label: str
    sha256: str
    frame: int | None = None


def is_scan_name(name: str) -> bool:
    """True for a visible file name with a supported scan suffix (or no suffix, for DICOM)."""
    if not name or name.startswith(".") or name in _IGNORED_NAMES:
        return False
    suffix = PurePosixPath(name).suffix.lower()
    return suffix in SUPPORTED_SUFFIXES or suffix == ""


def list_labelled(root: str | Path) -> list[LabelledImage]:
    """List a class-per-subfolder directory or zip as LabelledImage items, sorted deterministically."""
    root = Path(root)
    if root.is_dir():
        items = _list_folder(root)
    elif root.is_file() and zipfile.is_zipfile(root):
        items = _list_zip(root)
    elif root.exists():
        raise DatasetError(f"{root} is neither a folder nor a zip archive")
    else:
        raise DatasetError(f"{root} does not exist")
    if not items:
        raise DatasetError(f"{root} holds no labelled images (expected one subfolder per class)")
    items.sort(key=lambda item: (item.label, item.source))
    logger.info("listed %d images in %d classes from %s", len(items), len({i.label for i in items}), root)
    return items


def _list_folder(root: Path) -> list[LabelledImage]:
    """Files below each class subfolder (nested folders allowed, hidden entries skipped)."""
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if class_dir.name.startswith(".") or class_dir.name in _IGNORED_NAMES:
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _IGNORED_NAMES)
            for name in sorted(filenames):
                if is_scan_name(name):
                    path = Path(dirpath) / name
                    items.append(LabelledImage(str(path), class_dir.name, file_digest(path)))
    return items


def _safe_member_parts(name: str) -> tuple[str, ...]:
    """Split a zip member name, refusing absolute paths, drive letters and '..' escapes."""
    normalised = name.replace("\\", "/")
    parts = PurePosixPath(normalised).parts
    if normalised.startswith("/") or (parts and (":" in parts[0])) or ".." in parts:
        raise DatasetError(f"zip member {name!r} points outside the archive; refusing the zip")
    return tuple(p for p in parts if p not in ("", "."))


def _list_zip(path: Path) -> list[LabelledImage]:
    """Members of a zip laid out as class folders (one enclosing top folder is tolerated)."""
    with zipfile.ZipFile(path) as archive:
        members = []
        for info in archive.infolist():
            parts = _safe_member_parts(info.filename)  # check every member, even ignored ones
            if info.is_dir() or not parts or any(p.startswith(".") or p in _IGNORED_NAMES for p in parts):
                continue
            if not is_scan_name(parts[-1]):
                continue
            if info.flag_bits & 0x1:
                raise DatasetError(f"zip member {info.filename!r} is encrypted")
            if info.file_size > MAX_MEMBER_BYTES:
                raise DatasetError(f"zip member {info.filename!r} is {info.file_size} bytes; too large")
            members.append((parts, info))
        tops = {parts[0] for parts, _ in members}
        # "dataset/glioma/x.jpg" layout: strip the single enclosing folder.
        strip = 1 if len(tops) == 1 and any(len(parts) >= 3 for parts, _ in members) else 0
        items = []
        for parts, info in members:
            rel = parts[strip:]
            if len(rel) < 2:
                logger.warning("ignoring %s: not inside a class folder", info.filename)
                continue
            digest = hashlib.sha256(archive.read(info)).hexdigest()
            items.append(LabelledImage(f"{path}{ZIP_SEPARATOR}{info.filename}", rel[0], digest))
    return items


_zip_lock = threading.Lock()
_open_zips: dict[tuple[str, int, int], tuple[zipfile.ZipFile, threading.Lock]] = {}


def _zip_handle(path: str) -> tuple[zipfile.ZipFile, threading.Lock]:
    """A cached open ZipFile per (path, mtime, size); reopening per member would be O(n^2)."""
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    with _zip_lock:
        if key not in _open_zips:
            _open_zips[key] = (zipfile.ZipFile(path), threading.Lock())
        return _open_zips[key]


def close_archives() -> None:
    """Close every zip archive read_bytes has kept open."""
    with _zip_lock:
        for archive, _lock in _open_zips.values():
            archive.close()
        _open_zips.clear()


def read_bytes(item: LabelledImage) -> bytes:
    """Return the raw bytes of a labelled file or zip member."""
    source = item.source
    if ZIP_SEPARATOR in source and not os.path.exists(source):
        archive_path, member = source.split(ZIP_SEPARATOR, 1)
        archive, lock = _zip_handle(archive_path)
        with lock:  # one reader per archive object; decoding, not reading, is the slow part
            return archive.read(member)
    with open(source, "rb") as handle:
        return handle.read()


def stratified_hash_split(
    items: Sequence[LabelledImage], val_fraction: float = 0.1, seed: int = 42,
    group_keys: Sequence[str] | None = None,
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Split into (train, val), stratified by label, keeping each group on one side.

    A group is the items sharing a key: `group_keys[i]` for item i (near-copy groups, see
    training.similarity), else its content hash, so byte-identical files stay together.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if group_keys is not None and len(group_keys) != len(items):
        raise ValueError(f"{len(group_keys)} group keys for {len(items)} items")
    keys = list(group_keys) if group_keys is not None else [item.sha256 for item in items]
    groups: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[key].append(index)
    by_label: dict[str, list[str]] = defaultdict(list)
    for digest, members in groups.items():
        # A file copied into two classes still goes to one side, under its majority label.
        label = Counter(items[i].label for i in members).most_common(1)[0][0]
        by_label[label].append(digest)
    val_hashes: set[str] = set()
    for label in sorted(by_label):
        # Each content's place in the order is a keyed hash of its own bytes' hash, not a
        # shuffle of the whole list: as the pool grows, items keep their relative order, so an
        # item that was trained on moves to validation only inside the growth of the target
        # (a warm-started CNN is then validated on scans it has not seen).
        digests = sorted(by_label[label], key=lambda digest: _split_rank(seed, digest))
        total = sum(len(groups[d]) for d in digests)
        target = round(total * val_fraction)
        taken = 0
        for digest in digests:
            size = len(groups[digest])
            # Add a group only if it brings the count closer to the target.
            if abs(target - (taken + size)) < abs(target - taken):
                val_hashes.add(digest)
                taken += size
            if taken >= target:
                break
    train = [item for item, key in zip(items, keys) if key not in val_hashes]
    val = [item for item, key in zip(items, keys) if key in val_hashes]
    logger.info("split %d images into %d train / %d validation", len(items), len(train), len(val))
    return train, val


def _split_rank(seed: int, digest: str) -> bytes:
    return hashlib.sha256(f"{seed}:{digest}".encode()).digest()


def fit_label_encoder(labels: Iterable[str]):
    """A scikit-learn LabelEncoder fitted on the distinct labels (sorted class order)."""
    from sklearn.preprocessing import LabelEncoder  # noqa: PLC0415 - keep import of this module light

    return LabelEncoder().fit(sorted(set(labels)))


def dataset_fingerprint(items: Iterable[LabelledImage]) -> str:
    """SHA-256 over the sorted (label, sha256) pairs: the training-data hash."""
    digest = hashlib.sha256()
    for label, sha in sorted((item.label, item.sha256) for item in items):
        digest.update(f"{label}\t{sha}\n".encode())
    return digest.hexdigest()


def load_image_array(
    items: Sequence[LabelledImage],
    image_size: int,
    workers: int | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: dict[int, str] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Decode and resize items in parallel into uint8 [N, S, S, 3] plus each row's item index.

    A multi-frame DICOM contributes one row per frame, so its index repeats in
    kept_indices; with on_error="skip" undecodable items are logged and left out, and
    `skipped` (when given) receives {item index: reason} for each.
    """
    from models.preprocess import resize_image  # noqa: PLC0415 - models/ owns resizing

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")

    count = len(items)
    # Rows are written in place so the full-size array exists once, not twice.
    out = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    extra: dict[int, list[np.ndarray]] = {}
    failed: set[int] = set()

    def work(index: int) -> None:
        item = items[index]
        try:
            scans = decode_bytes(read_bytes(item), filename=item.source, target_size=image_size)
        except (DecodeError, OSError, KeyError) as exc:
            if on_error == "raise":
                raise DecodeError(f"{item.source}: {exc}") from exc
            logger.warning("skipping %s: %s", item.source, exc)
            failed.add(index)
            if skipped is not None:
                skipped[index] = str(exc)
            return
        if item.frame is not None:
            if item.frame >= len(scans):
                if on_error == "raise":
                    raise DecodeError(f"{item.source}: frame {item.frame} not found ({len(scans)} frame(s))")
                logger.warning("skipping %s: frame %d not found", item.source, item.frame)
                failed.add(index)
                if skipped is not None:
                    skipped[index] = f"frame {item.frame} not found ({len(scans)} frame(s))"
                return
            scans = [scans[item.frame]]
        out[index] = resize_image(scans[0].image, image_size)
        if len(scans) > 1:
            extra[index] = [resize_image(scan.image, image_size) for scan in scans[1:]]

    pool = ThreadPoolExecutor(max_workers=max(1, workers or min(8, os.cpu_count() or 1)))
    try:
        for _ in pool.map(work, range(count)):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if not extra and not failed:
        return out, list(range(count))
    kept = [i for i in range(count) if i not in failed for _ in range(1 + len(extra.get(i, ())))]
    packed = np.empty((len(kept), image_size, image_size, 3), dtype=np.uint8)
    row = 0
    for i in range(count):
        if i in failed:
            continue
        for frame in [out[i], *extra.get(i, ())]:
            packed[row] = frame
            row += 1
    return packed, kept
