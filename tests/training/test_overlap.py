"""training.overlap: which evaluated files a bundle learned from, exactly or as near copies."""

from __future__ import annotations

import cv2
import numpy as np

from training.overlap import training_overlap, write_training_thumbnails
from training.recipe import DATASET_LIST, write_dataset_list


def _scan(seed: int) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (6, 6), dtype=np.uint8)
    grey = cv2.resize(small, (64, 64), interpolation=cv2.INTER_CUBIC)
    return np.repeat(grey[:, :, None], 3, axis=2)


def test_exact_and_near_copies_of_learned_images_are_found(tmp_path):
    learned = [_scan(i) for i in range(4)]
    sides = ["train", "train", "validation", "train"]
    write_dataset_list(tmp_path / DATASET_LIST, [(f"sha{i}", None, "glioma", side) for i, side in enumerate(sides)]
                       + [("sha-test", None, "glioma", "test")])
    write_training_thumbnails(tmp_path, [f"sha{i}-0" for i in range(4)], sides, np.stack(learned))
    ok, buf = cv2.imencode(".jpg", learned[1], [cv2.IMWRITE_JPEG_QUALITY, 70])
    reencoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # other bytes, same picture
    evaluated = np.stack([learned[0], learned[2], reencoded, _scan(50), _scan(51)])
    found = training_overlap(tmp_path, ["sha0", "sha2", "other1", "sha-test", "other2"], evaluated)
    assert found["known"] and found["exact"] == {"train": 1, "validation": 1, "test": 1}
    assert found["near_copies"] == 1
    assert found["overlapping"].tolist() == [True, True, True, False, False]


def test_a_bundle_that_lists_nothing_overlaps_nothing(tmp_path):
    found = training_overlap(tmp_path, ["a", "b"], np.stack([_scan(1), _scan(2)]))
    assert not found["known"] and found["exact"] == {} and not found["overlapping"].any()
