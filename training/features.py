"""Backbone feature cache: frozen ResNet50/VGG16 outputs computed once per image and view.

The backbones are frozen, so recomputing them every epoch (as a plain fit() on images
would) wastes almost all of the training time. Instead the pooled backbone output is
computed once for the clean training images, for a fixed number of augmented views of
each training image, and for the validation images; the heads then train on the cache.
With a persistent store (training.feature_store) a run computes only what no earlier run
with the same backbone weights, image size and view has computed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from training.augment import AugmentParams, augment_image, draw_affine
from training.feature_store import FeatureStore, view_identity, weights_fingerprint

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
    images_per_second: float  # backbone throughput on the rows computed (0.0 when none were)
    computed: int = 0  # rows that went through the backbone
    stored: int = 0  # rows read back from a persistent store
    lookup_seconds: float = 0.0
    weights_sha256: str | None = None  # the backbone fingerprint, when a store was used

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

    `transform(batch, start)` (e.g. augmentation) is applied to each uint8 batch first;
    `start` is the batch's first row in `images_uint8`.
    """
    from models.preprocess import preprocess_for

    total = len(images_uint8)
    dim = int(backbone.output_shape[-1])
    out = np.empty((total, dim), dtype=np.float32)
    for start in range(0, total, batch_size):
        batch = images_uint8[start:start + batch_size]
        if transform is not None:
            batch = transform(batch, start)
        out[start:start + len(batch)] = np.asarray(
            backbone.predict_on_batch(preprocess_for(arch, batch)), dtype=np.float32
        )
        if on_batch is not None:
            on_batch(min(start + batch_size, total), total)
    return out


def _key_seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def view_transform(
    seed: int, view: int, keys: Sequence[str], params: AugmentParams = AugmentParams()
) -> Callable[[np.ndarray, int], np.ndarray]:
    """Deterministic augmentation for one view, drawn per image from (seed, view, image key).

    An image gets the same warp whatever else is in the run (and so the same cached
    feature); `keys[i]` names row i of the images the transform is applied to.
    """

    def transform(batch: np.ndarray, start: int) -> np.ndarray:
        out = np.empty_like(batch)
        for offset, image in enumerate(batch):
            rng = np.random.default_rng([seed, view, _key_seed(keys[start + offset])])
            out[offset] = augment_image(image, draw_affine(rng, params))
        return out

    return transform


@dataclass
class _Pass:
    name: str
    images: np.ndarray
    keys: list[str]
    view: int | None
    rows: np.ndarray
    missing: list[int]
    namespace: object = None


def build_feature_cache(
    backbone,
    arch: str,
    x_train: np.ndarray,
    x_val: np.ndarray,
    views: int,
    seed: int,
    batch_size: int = 32,
    on_progress: Callable[[float, str], None] | None = None,
    train_keys: Sequence[str] | None = None,
    val_keys: Sequence[str] | None = None,
    store: FeatureStore | None = None,
    augment: AugmentParams = AugmentParams(),
) -> FeatureCache:
    """Clean train, `views` augmented train, and validation features, each computed once.

    With a persistent `store` (training.feature_store) and content keys per row
    (`train_keys`, `val_keys`: training.feature_store.entry_key), rows already stored for
    this backbone's weights, image size and view are read back and only the rest go through
    the backbone (and are stored).
    """
    if store is not None and (train_keys is None or val_keys is None):
        raise ValueError("a persistent feature store needs a content key for every image")
    train_keys = list(train_keys) if train_keys is not None else [f"train-{i}" for i in range(len(x_train))]
    val_keys = list(val_keys) if val_keys is not None else [f"val-{i}" for i in range(len(x_val))]
    dim = int(backbone.output_shape[-1])
    started = time.perf_counter()
    fingerprint = weights_fingerprint(backbone) if store is not None else None
    specs = [("train", x_train, train_keys, None)]
    specs += [(f"view {v + 1}/{views}", x_train, train_keys, v) for v in range(views)]
    specs.append(("validation", x_val, val_keys, None))
    passes: list[_Pass] = []
    for name, images, keys, view in specs:
        if store is None:
            passes.append(_Pass(name, images, keys, view, np.empty((len(images), dim), np.float32),
                                list(range(len(images)))))
            continue
        namespace = store.namespace(arch, fingerprint, images.shape[1],
                                    view_identity(seed, view, augment), dim)
        rows, missing = namespace.get(keys)
        passes.append(_Pass(name, images, keys, view, rows, missing, namespace))
    lookup_seconds = time.perf_counter() - started
    grand_total = sum(len(p.missing) for p in passes)
    done_before = 0
    compute_started = time.perf_counter()
    for p in passes:
        if not p.missing:
            continue
        everything = len(p.missing) == len(p.images)
        # Only the misses go through the backbone (no copy when that is every row).
        images = p.images if everything else p.images[p.missing]
        keys = p.keys if everything else [p.keys[i] for i in p.missing]
        transform = None if p.view is None else view_transform(seed, p.view, keys, augment)

        def on_batch(done: int, total: int, _name: str = p.name, _before: int = done_before) -> None:
            if on_progress is not None:
                on_progress((_before + done) / grand_total, f"{arch} features: {_name} {done}/{total}")

        computed = backbone_features(backbone, arch, images, batch_size, on_batch, transform)
        p.rows[p.missing] = computed
        if p.namespace is not None:
            p.namespace.put(keys, computed)
        done_before += len(p.missing)
    compute_seconds = time.perf_counter() - compute_started
    seconds = time.perf_counter() - started
    views_arr = (np.stack([p.rows for p in passes[1:-1]]) if views
                 else np.empty((0, len(x_train), dim), np.float32))
    total_rows = sum(len(p.images) for p in passes)
    cache = FeatureCache(
        arch=arch,
        train=passes[0].rows,
        views=views_arr,
        val=passes[-1].rows,
        seconds=seconds,
        images_per_second=grand_total / compute_seconds if grand_total else 0.0,
        computed=grand_total,
        stored=total_rows - grand_total,
        lookup_seconds=lookup_seconds,
        weights_sha256=fingerprint,
    )
    log.info("%s feature cache: %d of %d images computed in %.1f s (%.1f img/s), %d read back from the store",
             arch, grand_total, total_rows, compute_seconds, cache.images_per_second, cache.stored)
    return cache
