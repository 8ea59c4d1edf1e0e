"""training.similarity: near-copy thumbnails and groups (issue 13's leak-free split)."""

from __future__ import annotations

import cv2
import numpy as np

from training.similarity import nearest_cosine, near_copy_groups, thumbnails


def _scan(seed: int, size: int = 96) -> np.ndarray:
    """A smooth random grey 'scan' (low-frequency blobs), RGB uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    grey = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _reencoded(image: np.ndarray, quality: int = 60) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def test_copies_group_and_different_scans_do_not():
    a, b, c = _scan(1), _scan(2), _scan(3)
    brighter = np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)  # offset: cosine ignores it
    images = [a, b, _reencoded(a), brighter, c, cv2.resize(b, (128, 128))]
    groups = near_copy_groups(thumbnails(images))
    assert groups[0] == groups[2] == groups[3]
    assert groups[1] == groups[5]
    assert len({groups[0], groups[1], groups[4]}) == 3
    assert groups.tolist()[0] == 0 and groups[5] == 1  # ids are each group's smallest row


def test_groups_are_connected_components():
    """A ~ B and B ~ C put A and C together even when A and C are not near copies themselves."""
    a = _scan(5).astype(float)
    c = _scan(6).astype(float)
    chain = [np.clip(a + (c - a) * t, 0, 255).astype(np.uint8) for t in np.linspace(0, 1, 12)]
    thumbs = thumbnails(chain)
    assert float(thumbs[0] @ thumbs[-1]) < 0.98
    assert len(set(near_copy_groups(thumbs).tolist())) == 1
    assert len(set(near_copy_groups(thumbs[[0, -1]]).tolist())) == 2


def test_flat_images_do_not_join_everything_and_nearest_finds_the_copy():
    flat = np.full((64, 64, 3), 128, np.uint8)
    thumbs = thumbnails([flat, flat.copy(), _scan(9)])
    assert not thumbs[0].any()  # a flat thumbnail is all zeros: cosine 0 with anything
    assert len(set(near_copy_groups(thumbs).tolist())) == 3
    index, score = nearest_cosine(thumbnails([_reencoded(_scan(9))]), thumbs)
    assert index.tolist() == [2] and score[0] > 0.99
