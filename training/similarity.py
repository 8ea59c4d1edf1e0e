"""Near-copy groups: images whose small grey thumbnails are nearly identical belong together.

The shared dataset holds re-encoded copies and neighbouring slices of the same scans: files
with different bytes but the same picture. A split by content hash puts such copies on both
sides, and the "held-out" figures then measure memorisation. Grouping by thumbnail similarity
(connected components of pairs at cosine >= a threshold) and splitting whole groups keeps a
picture and its copies on one side.

Thumbnails are 32 x 32 grey (INTER_AREA), mean-centred and unit-normalised, so the cosine
ignores brightness offsets and contrast scale. Pairs are compared in blocks (N^2/2 dot products
of 1,024 values: about 2 s for the 5,712 shared images on 2 cores).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

THUMBNAIL_SIZE = 32
NEAR_COPY_COSINE = 0.98
"""Default threshold: at 0.98 the shared folder's 5,712 images form about 4,560 groups."""
_BLOCK = 2048


def grey_thumbnails(images: Sequence[np.ndarray] | np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """[N, size, size] uint8: each image grey and area-resized (what a bundle stores of its data)."""
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        grey = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        out[i] = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return out


def normalise_thumbnails(grey: np.ndarray) -> np.ndarray:
    """[N, H, W] grey thumbnails -> [N, H*W] float32 rows, mean-centred, unit length (0 if flat)."""
    rows = np.asarray(grey, dtype=np.float32).reshape(len(grey), -1)
    rows = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.where(norms > 1e-6, rows / np.maximum(norms, 1e-6), 0.0).astype(np.float32)


def thumbnails(images: Sequence[np.ndarray] | np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """[N, size*size] float32 rows: grey, area-resized, mean-centred, unit length (0 if flat)."""
    return normalise_thumbnails(grey_thumbnails(images, size))


class _UnionFind:
    def __init__(self, count: int) -> None:
        self.parent = np.arange(count)

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_copy_pairs(thumbs: np.ndarray, threshold: float = NEAR_COPY_COSINE):
    """Yield (i, j) index arrays of pairs i < j whose thumbnails have cosine >= threshold."""
    count = len(thumbs)
    for start in range(0, count, _BLOCK):
        block = thumbs[start:start + _BLOCK]
        scores = block @ thumbs[start:].T  # only j >= start: each pair once
        rows, cols = np.nonzero(scores >= threshold)
        cols = cols + start
        rows = rows + start
        keep = cols > rows
        if keep.any():
            yield rows[keep], cols[keep]


def near_copy_groups(thumbs: np.ndarray, threshold: float = NEAR_COPY_COSINE) -> np.ndarray:
    """Group id per row: connected components of near-copy pairs; ids are each group's smallest row."""
    finder = _UnionFind(len(thumbs))
    for rows, cols in near_copy_pairs(thumbs, threshold):
        for a, b in zip(rows.tolist(), cols.tolist()):
            finder.union(a, b)
    return np.array([finder.find(i) for i in range(len(thumbs))], dtype=np.int64)


def nearest_cosine(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query thumbnail: the index of its most similar reference thumbnail and the cosine."""
    if len(reference) == 0:
        return np.full(len(queries), -1), np.full(len(queries), -np.inf, dtype=np.float32)
    best = np.empty(len(queries), dtype=np.int64)
    score = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), _BLOCK):
        sims = queries[start:start + _BLOCK] @ reference.T
        best[start:start + _BLOCK] = sims.argmax(axis=1)
        score[start:start + _BLOCK] = sims.max(axis=1)
    return best, score
