"""The baseline the feature cache is measured against: a plain fit() on images.

Every epoch each training image goes through the frozen backbone once, freshly augmented,
and every validation image once, clean - what the reference recipe did with
ImageDataGenerator.flow. The head, optimizer, callbacks and feature standardisation are
the cached path's (training.heads), so the two differ only in where the features come from.
bench/training.py runs both on the same split and reports both times and accuracies.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from models.preprocess import preprocess_for
from training.augment import AugmentParams, augment_batch
from training.features import backbone_features
from training.heads import HeadRecipe, Standardizer, compile_head, fold_standardizer, history_dict
from training.progress import EpochCallback

# Training images whose clean features set the standardisation (the cached path uses all
# of its cache; here a sample keeps the extra backbone pass small, and it is timed).
STANDARDIZER_IMAGES = 512


class ImageBatches(keras.utils.PyDataset):
    """(preprocessed images, labels) batches; with augment, a fresh random warp every epoch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, arch: str, batch_size: int,
                 seed: int, augment: bool, params: AugmentParams = AugmentParams()) -> None:
        """Serve `images` (uint8 [N,S,S,3]) in batches; with `augment`, mixed and warped anew."""
        super().__init__()
        self.images, self.labels = images, labels.astype(np.int32)
        self.arch, self.batch_size, self.seed = arch, int(batch_size), seed
        self.augment, self.params = augment, params
        self.calls = 0
        # Batches are fixed random mixes of classes; fit(shuffle=True) shuffles their order
        # every epoch (Keras also peeks at a batch and reads ahead across epochs, so the
        # epoch cannot be known here: each call draws its own warps instead).
        count = len(self.images)
        self.order = np.random.default_rng(seed).permutation(count) if augment else np.arange(count)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        batch = self.images[rows]
        if self.augment:
            self.calls += 1
            batch = augment_batch(batch, np.random.default_rng([self.seed, self.calls]), self.params)
        return preprocess_for(self.arch, batch), self.labels[rows]


@dataclass
class RecomputeResult:
    """History and timings of one recompute-every-epoch head training."""

    history: dict
    seconds: float
    standardizer_seconds: float


def train_head_recomputing(
    backbone,
    head,
    arch: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    recipe: HeadRecipe,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> RecomputeResult:
    """Train `head` on backbone(images) recomputed every epoch; afterwards it takes raw features.

    The model is frozen backbone -> fixed standardisation -> head; gradients reach only the
    head, but every step runs the backbone forward, as a plain fit() on images does.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(x_train), min(STANDARDIZER_IMAGES, len(x_train)), replace=False))
    standardizer = Standardizer.fit(backbone_features(backbone, arch, x_train[sample], recipe.batch_size))
    standardizer_seconds = time.perf_counter() - started
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    features = backbone(inputs, training=False)
    scaled = keras.layers.Normalization(mean=standardizer.mean, variance=standardizer.variance,
                                        name="standardize")(features)
    model = keras.Model(inputs, head(scaled), name=f"{arch}_recompute")
    callbacks = compile_head(model, recipe, on_epoch)
    history = model.fit(
        ImageBatches(x_train, y_train, arch, recipe.batch_size, seed, augment=True),
        validation_data=ImageBatches(x_val, y_val, arch, recipe.batch_size, seed, augment=False),
        epochs=recipe.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    fold_standardizer(head, standardizer)
    return RecomputeResult(history_dict(history), time.perf_counter() - started, standardizer_seconds)
