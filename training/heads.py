"""Train the ResNet50/VGG16 classification heads on cached backbone features (SPEC.md recipe)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from training.progress import EpochCallback, epoch_reporter

log = logging.getLogger(__name__)


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
    """Per-dimension mean/std of training features (std floored so dead units stay finite)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> "Standardizer":
        """Fit on [N, D] features."""
        mean = features.mean(axis=0, dtype=np.float64)
        std = features.std(axis=0, dtype=np.float64)
        floor = max(float(np.median(std)) * 1e-3, 1e-12)
        return cls(mean.astype(np.float32), np.maximum(std, floor).astype(np.float32))

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Return (features - mean) / std as float32."""
        return ((features - self.mean) / self.std).astype(np.float32)


def fold_standardizer(head, standardizer: Standardizer, layer_name: str = "features") -> None:
    """Fold x -> (x - mean)/std into the head's first Dense layer so it takes raw features.

    Dense((x - m)/s) = x @ (W / s[:, None]) + (b - (m/s) @ W): the same function, so the
    assembled model (backbone -> head) needs no extra normalisation layer.
    """
    layer = head.get_layer(layer_name)
    kernel, bias = layer.get_weights()
    scale = 1.0 / standardizer.std.astype(np.float64)
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
) -> dict[str, list[float]]:
    """Fit a head on standardised cached features, then fold the scaling into its weights.

    Random or ImageNet backbone outputs have wildly different scales per channel;
    training on standardised inputs lets Adam at lr 1e-4 converge in few epochs.
    Returns the Keras history dict; afterwards `head` takes raw backbone features.
    """
    standardizer = Standardizer.fit(train_features)
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
