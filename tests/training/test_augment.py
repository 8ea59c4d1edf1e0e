"""Augmentation: parameter ranges (SPEC.md), geometry of each transform, determinism."""

from __future__ import annotations

import numpy as np

from training.augment import AffineDraw, AugmentParams, augment_batch, augment_image, draw_affine


def test_default_params_are_the_spec_recipe():
    params = AugmentParams()
    assert (params.rotation_deg, params.shift, params.zoom, params.horizontal_flip) == (20.0, 0.2, 0.15, True)


def test_draws_stay_within_ranges_and_cover_them():
    rng = np.random.default_rng(0)
    draws = [draw_affine(rng, AugmentParams()) for _ in range(2000)]
    angles = np.array([d.angle_deg for d in draws])
    shifts = np.array([[d.shift_x, d.shift_y] for d in draws])
    scales = np.array([d.scale for d in draws])
    flips = np.array([d.flip for d in draws])
    assert angles.min() >= -20 and angles.max() <= 20 and angles.min() < -18 and angles.max() > 18
    assert shifts.min() >= -0.2 and shifts.max() <= 0.2 and shifts.max() > 0.18
    assert scales.min() >= 0.85 and scales.max() <= 1.15 and scales.min() < 0.87 and scales.max() > 1.13
    assert 0.4 < flips.mean() < 0.6


def test_no_flip_when_disabled():
    rng = np.random.default_rng(1)
    params = AugmentParams(horizontal_flip=False)
    assert not any(draw_affine(rng, params).flip for _ in range(200))


def _dot_image(size=40, y=10, x=8):
    image = np.zeros((size, size, 3), np.uint8)
    image[y, x] = 255
    return image


def test_identity_draw_leaves_image_unchanged():
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = augment_image(image, AffineDraw(0.0, 0.0, 0.0, 1.0, False))
    assert np.array_equal(out, image)


def test_flip_mirrors_horizontally():
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = augment_image(image, AffineDraw(0.0, 0.0, 0.0, 1.0, True))
    assert np.array_equal(out, image[:, ::-1])


def test_shift_moves_content_by_fraction_of_size():
    out = augment_image(_dot_image(), AffineDraw(0.0, 0.25, -0.2, 1.0, False))
    y, x = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
    assert (y, x) == (10 - 8, 8 + 10)


def test_rotation_and_zoom_keep_centre_fixed_and_move_corners():
    image = _dot_image(size=41, y=20, x=20)
    out = augment_image(image, AffineDraw(20.0, 0.0, 0.0, 1.15, False))
    assert out[20, 20, 0] == 255
    off = augment_image(_dot_image(size=41, y=20, x=35), AffineDraw(20.0, 0.0, 0.0, 1.0, False))
    y, x = np.unravel_index(np.argmax(off[..., 0]), off.shape[:2])
    assert y != 20  # an off-centre point moves under rotation


def test_batch_is_deterministic_per_seed_and_preserves_shape():
    batch = np.random.default_rng(4).integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    a = augment_batch(batch, np.random.default_rng(9))
    b = augment_batch(batch, np.random.default_rng(9))
    c = augment_batch(batch, np.random.default_rng(10))
    assert a.shape == batch.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
