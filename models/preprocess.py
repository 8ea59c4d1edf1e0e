"""Image resizing and per-model input preprocessing (pure numpy/OpenCV, no Keras graph)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

# ImageNet channel means in RGB order, as used by keras.applications "caffe" mode
# (ResNet50 and VGG16 both use it: RGB -> BGR, then subtract the BGR means).
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return a HxWx3 uint8 view/copy of a grayscale, RGB or RGBA image."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {arr.dtype}")
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr[:, :, :3]
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {arr.shape}")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize one uint8 image to a size x size x 3 uint8 array (INTER_AREA when shrinking)."""
    rgb = _as_rgb_uint8(image)
    height, width = rgb.shape[:2]
    if (height, width) == (size, size):
        return np.ascontiguousarray(rgb)
    # INTER_AREA averages source pixels when shrinking (no aliasing); it degrades to
    # nearest-like blockiness when enlarging, where linear interpolation is better.
    shrinking = height >= size and width >= size
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(rgb), (size, size), interpolation=interp)
    return out.reshape(size, size, 3)


def resize_batch(images: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """Resize a sequence of uint8 images into one [N, size, size, 3] uint8 array."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[1:] == (size, size, 3) and images.dtype == np.uint8:
            return images
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = resize_image(image, size)
    return out


def preprocess_for(model_name: str, batch_uint8: np.ndarray) -> np.ndarray:
    """Turn a uint8 RGB batch into the float32 input one model expects.

    resnet50/vgg16 (and svm/random_forest, which ride on resnet50 features): the
    keras.applications "caffe" preprocess_input (RGB->BGR, minus ImageNet means);
    custom_cnn: pixels scaled to [0, 1].
    """
    batch = np.asarray(batch_uint8)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected an [N, H, W, 3] batch, got shape {batch.shape}")
    if model_name in ("resnet50", "vgg16", "svm", "random_forest"):
        # Same arithmetic as keras.applications.{resnet50,vgg16}.preprocess_input, done in
        # numpy so it costs one pass and works under any Keras backend.
        return batch[..., ::-1].astype(np.float32) - _CAFFE_MEAN_BGR
    if model_name == "custom_cnn":
        return batch.astype(np.float32) * np.float32(1.0 / 255.0)
    raise ValueError(f"unknown model name {model_name!r}")
