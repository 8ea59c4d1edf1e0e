"""Small pictures of scans for the job and results tables: bounded sizes, kept in a bounded memory cache.

A job page of a few hundred scans asks for a thumbnail of each; decoding a DICOM again for every
view would cost far more than the few kilobytes a thumbnail PNG takes, so each web process keeps
the latest ones (by content hash, frame and size: blobs never change under a hash).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import cv2
import numpy as np

MIN_SIZE = 16
MAX_SIZE = 512
CACHE_BYTES = 32 * 1024 * 1024


def shrink(pixels: np.ndarray, size: int) -> np.ndarray:
    """The picture with its longer side at most `size` pixels (area resampling, never enlarged)."""
    height, width = pixels.shape[:2]
    scale = size / max(height, width)
    if scale >= 1:
        return pixels
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(pixels, shape, interpolation=cv2.INTER_AREA)


class ThumbnailCache:
    """A least-recently-used map of key -> PNG bytes, bounded by the bytes it holds; thread-safe."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        """The cached bytes of `key`, else make() (outside the lock) and keep them."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = make()
        with self._lock:
            if key not in self._items and len(data) <= self.max_bytes:
                self._items[key] = data
                self._bytes += len(data)
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= len(old)
        return data

    def __len__(self) -> int:
        return len(self._items)


CACHE = ThumbnailCache()
