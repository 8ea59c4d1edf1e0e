"""models.architectures: layer stacks and output shapes at tiny sizes."""

from __future__ import annotations

import numpy as np
import pytest

from models.architectures import (
    FEATURES_LAYER,
    assemble_transfer_model,
    build_backbone,
    build_custom_cnn,
    build_head,
    build_transfer_model,
)
from models.backbones import BackboneWeights

NONE = BackboneWeights(mode="none")


@pytest.mark.parametrize("arch,pooled", [("resnet50", 2048), ("vgg16", 512)])
def test_transfer_model_shapes_and_frozen_base(arch, pooled):
    model = build_transfer_model(arch, 32, NONE, num_classes=4)
    assert model.output_shape == (None, 4)
    assert model.get_layer(FEATURES_LAYER).output.shape[-1] == 256
    # Only the head trains: Dense(256) and Dense(4), kernel + bias each.
    assert len(model.trainable_weights) == 4
    assert model.get_layer(arch).trainable is False
    backbone = build_backbone(arch, 32, NONE)
    assert backbone.output_shape == (None, pooled)


def test_assembled_model_equals_backbone_then_head():
    backbone = build_backbone("vgg16", 32, NONE)
    head = build_head("vgg16", backbone.output_shape[-1], 3)
    full = assemble_transfer_model(backbone, head)
    x = np.random.default_rng(0).normal(0, 50, size=(2, 32, 32, 3)).astype(np.float32)
    staged = head.predict(backbone.predict(x, verbose=0), verbose=0)
    np.testing.assert_allclose(full.predict(x, verbose=0), staged, rtol=1e-4, atol=1e-6)


def test_reference_cnn_matches_spec_stack():
    model = build_custom_cnn(64, 4, "reference")
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 64, 128, 256]
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds.count("MaxPooling2D") == 4 and "Flatten" in kinds
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [d.units for d in dense] == [512, 4]
    assert model.get_layer("dropout").rate == 0.5
    assert "BatchNormalization" not in kinds


def test_reference_cnn_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="46"):
        build_custom_cnn(32, 4, "reference")


def test_improved_cnn_has_batchnorm_and_pooled_head():
    model = build_custom_cnn(32, 4, "improved")
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds.count("BatchNormalization") == 4
    assert "GlobalAveragePooling2D" in kinds and "Flatten" not in kinds
    out = model.predict(np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32), verbose=0)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_variant():
    with pytest.raises(ValueError):
        build_custom_cnn(32, 4, "fancy")
