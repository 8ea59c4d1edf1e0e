"""Folding BatchNorm into convolutions keeps every network's outputs and removes the BN layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models.architectures import build_custom_cnn, build_transfer_model
from models.backbones import BackboneWeights
from models.fold import fold_batchnorm
from models.precision import with_precision


def _batchnorms(model) -> int:
    stack, count = list(model.layers), 0
    while stack:
        layer = stack.pop()
        count += isinstance(layer, keras.layers.BatchNormalization)
        stack.extend(getattr(layer, "layers", []) or [])
    return count


def _randomise_batchnorm(model, rng) -> None:
    """Give every BatchNorm non-trivial statistics, as a trained network has."""
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []) or [])
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([
                rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if "variance" in v.path or "gamma" in v.path
                else rng.normal(0, 0.2, w.shape).astype(np.float32)
                for v, w in zip(layer.weights, layer.get_weights())
            ])


@pytest.mark.parametrize("name", ["resnet50", "custom_cnn"])
def test_folded_network_gives_the_same_outputs(name):
    keras.utils.set_random_seed(0)
    model = (build_transfer_model("resnet50", 64, BackboneWeights("none")) if name == "resnet50"
             else build_custom_cnn(64, 4, "improved"))
    _randomise_batchnorm(model, np.random.default_rng(0))
    folded = fold_batchnorm(model)
    assert _batchnorms(model) > 0 and _batchnorms(folded) == 0
    x = np.random.default_rng(1).uniform(-100, 100, (4, 64, 64, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), expected, rtol=1e-3, atol=1e-5)
    # The original is untouched.
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected)


def test_folding_keeps_bfloat16_layers_in_bfloat16():
    keras.utils.set_random_seed(0)
    model = with_precision(build_custom_cnn(32, 4, "improved"), "bfloat16")
    folded = fold_batchnorm(model)
    convs = [layer for layer in folded.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "bfloat16" and layer.use_bias for layer in convs)
    assert all(layer.compute_dtype == "bfloat16" for layer in folded.layers if layer.name.startswith("bn"))


def test_network_without_batchnorm_is_returned_as_is():
    model = build_transfer_model("vgg16", 32, BackboneWeights("none"))
    assert fold_batchnorm(model) is model
