"""models.preprocess: resizing and per-model input scaling."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models.preprocess import preprocess_for, resize_batch, resize_image


def test_resize_image_shapes_and_channels():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(100, 80), dtype=np.uint8)
    rgba = rng.integers(0, 256, size=(20, 30, 4), dtype=np.uint8)
    assert resize_image(gray, 32).shape == (32, 32, 3)
    assert resize_image(rgba, 64).shape == (64, 64, 3)
    out = resize_image(gray, 32)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_resize_uses_area_averaging_when_shrinking():
    # A 2x2 checkerboard of 0/255 averaged down by 2 must give ~127, not 0 or 255.
    board = np.indices((64, 64)).sum(axis=0) % 2 * 255
    out = resize_image(board.astype(np.uint8), 32)
    assert np.all(np.abs(out.astype(int) - 127) <= 1)


def test_resize_rejects_non_uint8():
    with pytest.raises(ValueError):
        resize_image(np.zeros((10, 10, 3), dtype=np.float32), 8)


def test_resize_batch_mixed_sizes():
    images = [np.full((40, 50, 3), 10, np.uint8), np.full((30, 30), 200, np.uint8)]
    batch = resize_batch(images, 16)
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.uint8
    assert batch[0].max() == 10 and batch[1].min() == 200


@pytest.mark.parametrize("name", ["resnet50", "vgg16"])
def test_caffe_preprocess_matches_keras_applications(name):
    batch = np.random.default_rng(1).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    module = keras.applications.resnet50 if name == "resnet50" else keras.applications.vgg16
    expected = keras.ops.convert_to_numpy(module.preprocess_input(batch.astype(np.float32)))
    np.testing.assert_allclose(preprocess_for(name, batch), expected, rtol=0, atol=1e-4)


def test_cnn_preprocess_is_unit_range():
    batch = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    out = preprocess_for("custom_cnn", batch)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 128 / 255, 1.0], rtol=1e-6)


def test_unknown_model_name():
    with pytest.raises(ValueError):
        preprocess_for("alexnet", np.zeros((1, 4, 4, 3), np.uint8))
