"""Backbone feature cache: frozen ResNet50/VGG16 outputs computed once per image and view.

The backbones are frozen, so recomputing them every epoch (as a plain fit() on images
would) wastes almost all of the training time. Instead the pooled backbone output is
computed once for the clean training images, for a fixed number of augmented views of
each training image, and for the validation images; the heads then train on the cache.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from training.augment import AugmentParams, augment_batch

log = logging.getLogger(__name__)

BatchCallback = Callable[[int, int], None]


@dataclass
class FeatureCache:
    """Pooled backbone outputs: clean train [N, D], augmented views [V, N, D], validation [M, D]."""

    arch: str
    train: np.ndarray
    views: np.ndarray
    val: np.ndarray
    seconds: float
    images_per_second: float

    def training_set(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stack clean and augmented training features with their repeated labels."""
        blocks = [self.train, *self.views]
        return np.concatenate(blocks), np.tile(labels, len(blocks))


def _batchnorm_layers(model) -> list:
    """All BatchNormalization layers of a (possibly nested) Keras model."""
    import keras

    found: list = []
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return found


def recalibrate_batchnorm(
    backbone, arch: str, images_uint8: np.ndarray, batch_size: int = 64
) -> int:
    """Re-estimate BatchNorm moving mean/variance of a frozen backbone on training images.

    A randomly initialised ResNet50 keeps the default statistics (mean 0, variance 1),
    which are far from its real activations, so deep features collapse or explode. One
    forward pass in training mode (no gradient, weights untouched) with a cumulative
    average momentum sets every BatchNorm layer to the population statistics of these
    images. Returns the number of recalibrated layers.
    """
    from models.preprocess import preprocess_for

    layers = _batchnorm_layers(backbone)
    if not layers:
        return 0
    saved = [(layer, layer.trainable, layer.momentum) for layer in layers]
    batches = [images_uint8[i:i + batch_size] for i in range(0, len(images_uint8), batch_size)]
    try:
        for layer in layers:
            # Keras runs BatchNorm in inference mode while the layer is frozen.
            layer.trainable = True
        for step, batch in enumerate(batches):
            # momentum = k/(k+1) makes the moving statistics the running mean over batches.
            for layer in layers:
                layer.momentum = step / (step + 1.0)
            backbone(preprocess_for(arch, batch), training=True)
    finally:
        for layer, trainable, momentum in saved:
            layer.trainable = trainable
            layer.momentum = momentum
    log.info("recalibrated %d BatchNorm layers of %s on %d images", len(layers), arch, len(images_uint8))
    return len(layers)


def backbone_features(
    backbone,
    arch: str,
    images_uint8: np.ndarray,
    batch_size: int = 32,
    on_batch: BatchCallback | None = None,
    transform: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> np.ndarray:
    """Run the frozen backbone over uint8 images in batches; return float32 [N, D] features.

    `transform(batch, batch_index)` (e.g. augmentation) is applied to each uint8 batch first.
    """
    from models.preprocess import preprocess_for

    total = len(images_uint8)
    dim = int(backbone.output_shape[-1])
    out = np.empty((total, dim), dtype=np.float32)
    for index, start in enumerate(range(0, total, batch_size)):
        batch = images_uint8[start:start + batch_size]
        if transform is not None:
            batch = transform(batch, index)
        out[start:start + len(batch)] = np.asarray(
            backbone.predict_on_batch(preprocess_for(arch, batch)), dtype=np.float32
        )
        if on_batch is not None:
            on_batch(min(start + batch_size, total), total)
    return out


def view_transform(
    seed: int, view: int, params: AugmentParams = AugmentParams()
) -> Callable[[np.ndarray, int], np.ndarray]:
    """Deterministic augmentation for one view: the same images get the same warps per arch."""

    def transform(batch: np.ndarray, batch_index: int) -> np.ndarray:
        return augment_batch(batch, np.random.default_rng([seed, view, batch_index]), params)

    return transform


def build_feature_cache(
    backbone,
    arch: str,
    x_train: np.ndarray,
    x_val: np.ndarray,
    views: int,
    seed: int,
    batch_size: int = 32,
    on_progress: Callable[[float, str], None] | None = None,
) -> FeatureCache:
    """Compute clean train, `views` augmented train, and validation features once."""
    passes = [("train", x_train, None)]
    passes += [(f"view {v + 1}/{views}", x_train, view_transform(seed, v)) for v in range(views)]
    passes.append(("validation", x_val, None))
    grand_total = sum(len(images) for _, images, _ in passes)
    done_before = 0
    results: list[np.ndarray] = []
    started = time.perf_counter()
    for name, images, transform in passes:

        def on_batch(done: int, total: int, _name: str = name, _before: int = done_before) -> None:
            if on_progress is not None:
                on_progress((_before + done) / grand_total, f"{arch} features: {_name} {done}/{total}")

        results.append(backbone_features(backbone, arch, images, batch_size, on_batch, transform))
        done_before += len(images)
    seconds = time.perf_counter() - started
    dim = int(backbone.output_shape[-1])
    views_arr = np.stack(results[1:-1]) if views else np.empty((0, len(x_train), dim), np.float32)
    cache = FeatureCache(
        arch=arch,
        train=results[0],
        views=views_arr,
        val=results[-1],
        seconds=seconds,
        images_per_second=grand_total / max(seconds, 1e-9),
    )
    log.info("%s feature cache: %d images in %.1f s (%.1f img/s)", arch, grand_total, seconds,
             cache.images_per_second)
    return cache
