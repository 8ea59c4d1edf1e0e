"""Train the ResNet50/VGG16 classification heads on cached backbone features (SPEC.md recipe)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from training.progress import EpochCallback, epoch_reporter

log = logging.getLogger(__name__)

CONSTANT_CHANNEL_RATIO = 1e-3
"""A feature dimension whose training std is below this share of the median std is constant."""


@dataclass(frozen=True)
class HeadRecipe:
    """SPEC.md: Adam lr 1e-4, sparse CE, EarlyStopping(5, best), ReduceLROnPlateau(0.5, 3)."""

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-4
    patience: int = 5
    plateau_factor: float = 0.5
    plateau_patience: int = 3


@dataclass
class Standardizer:
    """Per-dimension mean and inverse std of training features; constant dimensions get scale 0.

    A dimension that (nearly) never varied in training carries no information the head could
    learn, and dividing it by a floored std would multiply any later variation by ~1,000
    into weights that were never trained on it: on unusual inputs (contrast-inverted, noise)
    such channels fired and flipped 25-44% of a head's labels. So they are zeroed instead.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> "Standardizer":
        """Fit on [N, D] features."""
        mean = features.mean(axis=0, dtype=np.float64)
        std = features.std(axis=0, dtype=np.float64)
        # "Constant" relative to the typical channel, so the test is independent of the
        # backbone's output scale (random-init and ImageNet backbones differ by orders).
        floor = max(float(np.median(std)) * CONSTANT_CHANNEL_RATIO, 1e-12)
        scale = np.where(std > floor, 1.0 / np.maximum(std, floor), 0.0)
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    @property
    def constant_channels(self) -> int:
        """How many dimensions were constant in training (and are ignored)."""
        return int(np.count_nonzero(self.scale == 0))

    @property
    def variance(self) -> np.ndarray:
        """The variance a keras Normalization layer needs for the same mapping (huge where constant)."""
        safe = np.where(self.scale > 0, self.scale, 1e-15).astype(np.float64)
        return (1.0 / np.square(safe)).astype(np.float32)

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Return (features - mean) * scale as float32 (0 for constant dimensions)."""
        return ((features - self.mean) * self.scale).astype(np.float32)


def fold_standardizer(head, standardizer: Standardizer, layer_name: str = "features") -> None:
    """Fold x -> (x - mean) * scale into the head's first Dense layer so it takes raw features.

    Dense((x - m) * k) = x @ (W * k[:, None]) + (b - (m * k) @ W): the same function, so the
    assembled model (backbone -> head) needs no extra normalisation layer. Constant training
    dimensions have k = 0, so their kernel rows are zero and they cannot move the output.
    """
    layer = head.get_layer(layer_name)
    kernel, bias = layer.get_weights()
    scale = standardizer.scale.astype(np.float64)
    new_kernel = kernel.astype(np.float64) * scale[:, None]
    new_bias = bias.astype(np.float64) - (standardizer.mean.astype(np.float64) * scale) @ kernel
    layer.set_weights([new_kernel.astype(np.float32), new_bias.astype(np.float32)])


def compile_head(model, recipe: HeadRecipe, on_epoch: EpochCallback | None = None) -> list:
    """Compile `model` with the recipe's optimizer and loss; return the recipe's callbacks.

    Shared by the cached path (train_head) and the recompute baseline (training.recompute),
    so the two differ only in where the backbone features come from.
    """
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=recipe.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=recipe.patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=recipe.plateau_factor, patience=recipe.plateau_patience
        ),
        epoch_reporter(recipe.epochs, on_epoch),
    ]


def unfold_into(head, raw_weights: list[np.ndarray], standardizer: Standardizer,
                layer_name: str = "features") -> None:
    """Set `head` (which sees standardised features) to the function of a folded head's weights
    `raw_weights` ([features kernel, bias, predictions kernel, bias]; they take raw features).

    The inverse of fold_standardizer: x @ W + b = ((x - m) * k) @ (W / k[:, None]) + (b + m @ W)
    where k > 0; a dimension constant in this training set (k = 0) adds its mean's share to the bias.
    """
    kernel, bias, out_kernel, out_bias = (np.asarray(w, dtype=np.float64) for w in raw_weights)
    scale = standardizer.scale.astype(np.float64)
    safe = np.where(scale > 0, scale, 1.0)
    std_kernel = np.where(scale[:, None] > 0, kernel / safe[:, None], 0.0)
    std_bias = bias + standardizer.mean.astype(np.float64) @ kernel
    head.get_layer(layer_name).set_weights([std_kernel.astype(np.float32), std_bias.astype(np.float32)])
    head.get_layer("predictions").set_weights([out_kernel.astype(np.float32), out_bias.astype(np.float32)])


def history_dict(history) -> dict[str, list[float]]:
    """A Keras History as {metric: [float per epoch]}."""
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def train_head(
    head,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    recipe: HeadRecipe,
    on_epoch: EpochCallback | None = None,
    initial: list[np.ndarray] | None = None,
) -> dict[str, list[float]]:
    """Fit a head on standardised cached features, then fold the scaling into its weights.

    Random or ImageNet backbone outputs have wildly different scales per channel;
    training on standardised inputs lets Adam at lr 1e-4 converge in few epochs.
    `initial` (a previous folded head's weights on the same backbone) starts the head where that
    one ended, so early stopping ends a retrain after a few epochs (a warm start).
    Returns the Keras history dict; afterwards `head` takes raw backbone features.
    """
    standardizer = Standardizer.fit(train_features)
    if standardizer.constant_channels:
        log.info("head: %d of %d feature dimensions were constant in training and are ignored",
                 standardizer.constant_channels, standardizer.scale.size)
    if initial is not None:
        unfold_into(head, initial, standardizer)
    callbacks = compile_head(head, recipe, on_epoch)
    history = head.fit(
        standardizer.apply(train_features),
        train_labels.astype(np.int32),
        validation_data=(standardizer.apply(val_features), val_labels.astype(np.int32)),
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    fold_standardizer(head, standardizer)
    return history_dict(history)


def head_features(head, features: np.ndarray, layer_name: str = "features") -> np.ndarray:
    """The 256-d output of the head's Dense 'features' layer for raw backbone features."""
    import keras

    extractor = keras.Model(head.inputs, head.get_layer(layer_name).output)
    return np.asarray(extractor.predict(features, batch_size=1024, verbose=0), dtype=np.float32)


def head_probabilities(head, features: np.ndarray) -> np.ndarray:
    """Class probabilities of a (folded) head for raw backbone features."""
    return np.asarray(head.predict(features, batch_size=1024, verbose=0), dtype=np.float32)
