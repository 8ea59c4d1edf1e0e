"""Does an evaluation overlap what a bundle learned from? Exact (content hash) and near copies.

Scoring a bundle on files it trained or validated on measures memory, not skill. A bundle lists
what it used in dataset.tsv (content hashes and their side) and keeps a small grey thumbnail
of each of those images (thumbnails.png, one 32 px tile per row of thumbnails.tsv: a plain
image, nothing a loader deserialises), so `evaluate` can say how many evaluated files it
has seen byte for byte and how many are near copies (training.similarity) of one it has seen,
and report the figures without them separately.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from training.similarity import NEAR_COPY_COSINE, grey_thumbnails, nearest_cosine, normalise_thumbnails

THUMBNAILS_FILE = "thumbnails.png"
THUMBNAIL_KEYS_FILE = "thumbnails.tsv"


def write_training_thumbnails(bundle_dir: str | Path, keys: Sequence[str], sides: Sequence[str],
                              images: np.ndarray) -> Path:
    """Store the grey 32 px thumbnail (uint8) of each training/validation row with its key and side."""
    import cv2

    bundle = Path(bundle_dir)
    grey = grey_thumbnails(images)
    if not len(grey):
        return bundle / THUMBNAILS_FILE
    cv2.imwrite(str(bundle / THUMBNAILS_FILE), grey.reshape(-1, grey.shape[2]))  # tiles stacked downwards
    (bundle / THUMBNAIL_KEYS_FILE).write_text(
        "key\tside\n" + "".join(f"{key}\t{side}\n" for key, side in zip(keys, sides)))
    return bundle / THUMBNAILS_FILE


def _seen(bundle: Path) -> tuple[dict[str, str], np.ndarray | None]:
    """{sha256: side} from dataset.tsv and the normalised thumbnails of the rows the bundle learned from."""
    from training.recipe import DATASET_LIST, read_dataset_list

    sides: dict[str, str] = {}
    if (bundle / DATASET_LIST).is_file():
        for row in read_dataset_list(bundle / DATASET_LIST):
            sides.setdefault(row["sha256"], row["split"])
    thumbs = None
    if (bundle / THUMBNAILS_FILE).is_file() and (bundle / THUMBNAIL_KEYS_FILE).is_file():
        import cv2

        stacked = cv2.imread(str(bundle / THUMBNAILS_FILE), cv2.IMREAD_GRAYSCALE)
        rows = [line.split("\t") for line in (bundle / THUMBNAIL_KEYS_FILE).read_text().splitlines()[1:]]
        if stacked is not None and rows and stacked.shape[0] % len(rows) == 0:
            grey = stacked.reshape(len(rows), -1, stacked.shape[1])
            learned = np.array([side in ("train", "validation") for _key, side in rows])
            thumbs = normalise_thumbnails(grey[learned])
    return sides, thumbs


def training_overlap(bundle_dir: str | Path, shas: Sequence[str], images: np.ndarray,
                     threshold: float = NEAR_COPY_COSINE) -> dict:
    """Per evaluated row (content hash `shas[i]`, decoded `images[i]`): seen exactly, or a near copy.

    Returns {"known": whether the bundle lists its data, "exact": {side: rows}, "near_copies":
    rows not exact but at cosine >= threshold to a learned image, "threshold", "overlapping":
    a boolean mask of rows that overlap either way}.
    """
    sides, thumbs = _seen(Path(bundle_dir))
    exact_side = [sides.get(sha) for sha in shas]
    exact = np.array([side in ("train", "validation") for side in exact_side], dtype=bool)
    near = np.zeros(len(shas), dtype=bool)
    if thumbs is not None and len(thumbs) and len(images):
        _, cosine = nearest_cosine(normalise_thumbnails(grey_thumbnails(images)), thumbs)
        near = (cosine >= threshold) & ~exact
    counts: dict[str, int] = {}
    for side in exact_side:
        if side is not None:
            counts[side] = counts.get(side, 0) + 1
    return {"known": bool(sides), "exact": counts, "near_copies": int(near.sum()),
            "threshold": threshold, "overlapping": exact | near}
