"""Keras 3 network definitions: transfer models (ResNet50/VGG16 + head) and the custom CNN."""

from __future__ import annotations

import logging
from typing import Sequence

import keras
from keras import layers

from models.backbones import ARCHES, BackboneWeights

logger = logging.getLogger(__name__)

FEATURES_LAYER = "features"
PREDICTIONS_LAYER = "predictions"
POOL_LAYER = "avg_pool"
HEAD_DROPOUT_LAYER = "head_dropout"
FEATURE_DIM = 256
CNN_VARIANTS: tuple[str, ...] = ("reference", "improved")
# The reference stack uses 'valid' 3x3 convolutions and four 2x2 pools (as the reference
# implementation did, ~1.3 GFLOP at 224 px); below 46 px a feature map would vanish.
REFERENCE_MIN_SIZE = 46


def _application(arch: str, image_size: int, weights: BackboneWeights) -> keras.Model:
    if arch not in ARCHES:
        raise ValueError(f"unknown backbone {arch!r}; expected one of {', '.join(ARCHES)}")
    factory = keras.applications.ResNet50 if arch == "resnet50" else keras.applications.VGG16
    base = factory(
        include_top=False,
        weights=weights.keras_weights_arg(),
        input_shape=(image_size, image_size, 3),
    )
    base.trainable = False
    return base


def build_backbone(arch: str, image_size: int, weights: BackboneWeights) -> keras.Model:
    """Return the frozen base network followed by global average pooling ([N, C] output)."""
    base = _application(arch, image_size, weights)
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    # training=False keeps BatchNorm in inference mode even while the head trains.
    x = base(inputs, training=False)
    outputs = layers.GlobalAveragePooling2D(name=POOL_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"{arch}_backbone")


def build_head(arch: str, input_dim: int, num_classes: int = 4) -> keras.Model:
    """Return Dense(256, relu, name='features') -> Dropout(0.5) -> Dense(num_classes, softmax)."""
    inputs = keras.Input(shape=(input_dim,), name="pooled")
    x = layers.Dense(FEATURE_DIM, activation="relu", name=FEATURES_LAYER)(inputs)
    x = layers.Dropout(0.5, name=HEAD_DROPOUT_LAYER)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=PREDICTIONS_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"{arch}_head")


def assemble_transfer_model(backbone: keras.Model, head: keras.Model) -> keras.Model:
    """Join a backbone and a head into one flat model with top-level 'features' and 'predictions'.

    Fresh head layers are created and the head's weights copied in, so the result owns its
    layers and saves cleanly; the backbone's frozen base network is shared, not copied.
    """
    arch = backbone.name.removesuffix("_backbone")
    base = backbone.get_layer(arch)
    image_size = backbone.input_shape[1]
    num_classes = head.output_shape[-1]
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = base(inputs, training=False)
    x = layers.GlobalAveragePooling2D(name=POOL_LAYER)(x)
    features = layers.Dense(FEATURE_DIM, activation="relu", name=FEATURES_LAYER)
    dropout = layers.Dropout(0.5, name=HEAD_DROPOUT_LAYER)
    predictions = layers.Dense(num_classes, activation="softmax", name=PREDICTIONS_LAYER)
    outputs = predictions(dropout(features(x)))
    model = keras.Model(inputs, outputs, name=arch)
    features.set_weights(head.get_layer(FEATURES_LAYER).get_weights())
    predictions.set_weights(head.get_layer(PREDICTIONS_LAYER).get_weights())
    return model


def build_transfer_model(
    arch: str, image_size: int, weights: BackboneWeights, num_classes: int = 4
) -> keras.Model:
    """Return frozen base -> GAP -> Dense(256, 'features') -> Dropout(0.5) -> Dense(softmax)."""
    backbone = build_backbone(arch, image_size, weights)
    head = build_head(arch, backbone.output_shape[-1], num_classes)
    return assemble_transfer_model(backbone, head)


def _reference_cnn(image_size: int, num_classes: int) -> keras.Model:
    if image_size < REFERENCE_MIN_SIZE:
        raise ValueError(
            f"the reference CNN needs image_size >= {REFERENCE_MIN_SIZE} (got {image_size}); "
            "use variant='improved' for smaller images"
        )
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = inputs
    for i, filters in enumerate((32, 64, 128, 256), start=1):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="dense")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=PREDICTIONS_LAYER)(x)
    return keras.Model(inputs, outputs, name="custom_cnn")


def _improved_cnn(
    image_size: int, num_classes: int, filters: Sequence[int], dropout: float
) -> keras.Model:
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = inputs
    for i, width in enumerate(filters, start=1):
        # Bias is redundant before BatchNorm (its beta plays that role).
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    # A pooled head has ~1k weights instead of the reference's ~19M dense weights, which is
    # what lets it generalise from a few thousand scans.
    x = layers.GlobalAveragePooling2D(name=POOL_LAYER)(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=PREDICTIONS_LAYER)(x)
    return keras.Model(inputs, outputs, name="custom_cnn")


def build_custom_cnn(
    image_size: int,
    num_classes: int = 4,
    variant: str = "improved",
    *,
    filters: Sequence[int] = (32, 64, 128, 256),
    dropout: float = 0.4,
) -> keras.Model:
    """Return the from-scratch CNN: 'reference' (SPEC.md stack) or 'improved' (BN + pooled head).

    `filters` and `dropout` tune the improved variant only.
    """
    if variant == "reference":
        return _reference_cnn(image_size, num_classes)
    if variant == "improved":
        if image_size < 2 ** len(filters):
            raise ValueError(f"image_size {image_size} is too small for {len(filters)} pooling blocks")
        return _improved_cnn(image_size, num_classes, filters, dropout)
    raise ValueError(f"unknown custom CNN variant {variant!r}; expected one of {CNN_VARIANTS}")


def build_network(
    name: str,
    image_size: int,
    weights: BackboneWeights | None = None,
    num_classes: int = 4,
    cnn_variant: str = "improved",
) -> keras.Model:
    """Build one of the three networks by model name ('resnet50', 'vgg16', 'custom_cnn')."""
    if name in ARCHES:
        return build_transfer_model(name, image_size, weights or BackboneWeights("none"), num_classes)
    if name == "custom_cnn":
        return build_custom_cnn(image_size, num_classes, cnn_variant)
    raise ValueError(f"unknown network {name!r}")
