"""training.precision_check and the engine following it: every network in bfloat16 only where a
bundle's own validation scans keep the ensemble's labels and accuracy."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from models.bundle import load_bundle
from models.engine import DEFAULT_BF16_NETWORKS, InferenceEngine, bfloat16_networks_for
from models.precision import bfloat16_supported
from tests.helpers.tiny_bundle import synthetic_images
from training.precision_check import BF16_MIN_AGREEMENT, allows_every_network, check_bfloat16

EVERY = ["resnet50", "vgg16", "custom_cnn"]
needs_bf16 = pytest.mark.skipif(not bfloat16_supported(), reason="this CPU has no bfloat16 instructions")


@pytest.fixture(scope="module")
def checked(tiny_bundle):
    """(bundle, images, truth, the every-network bfloat16 engine's ensemble labels)."""
    bundle = load_bundle(tiny_bundle)
    images, truth = synthetic_images(per_class=5, image_size=32, seed=11)
    engine = InferenceEngine(bundle, "bfloat16", 8, bf16_networks=EVERY)
    labels = np.argmax(engine.predict_probabilities(images)["ensemble"], axis=1)
    return bundle, images, truth, labels


@needs_bf16
def test_every_network_is_allowed_when_the_labels_agree_and_accuracy_holds(checked):
    bundle, images, _, labels = checked
    # Taking the every-network labels as the truth: nothing can beat them, so accuracy holds.
    block = check_bfloat16(bundle, images, labels, labels, batch_size=8)
    assert block["checked"] and block["images"] == 20 and block["flips"] == 0
    assert block["every_network_agreement"] == 1.0 and block["bfloat16_networks"] == EVERY
    assert block["accuracy"]["bfloat16_every"] == block["accuracy"]["float32"] == 1.0
    assert 0 <= block["default_networks_agreement"] <= 1 and block["default_networks_flips"] >= 0


@needs_bf16
def test_too_many_flips_keep_resnet50_in_float32(checked):
    bundle, images, truth, labels = checked
    float32 = labels.copy()
    float32[0] = (float32[0] + 1) % 4  # one flip in 20 is 0.95 agreement, under the bar
    assert 19 / 20 < BF16_MIN_AGREEMENT
    block = check_bfloat16(bundle, images, float32, truth, batch_size=8)
    assert block["flips"] == 1 and block["bfloat16_networks"] == list(DEFAULT_BF16_NETWORKS)


def test_the_rule_weighs_what_resnet50_changes_not_what_the_default_already_does():
    assert allows_every_network(1.0, 0.97, 0.97)
    assert allows_every_network(BF16_MIN_AGREEMENT, 0.98, 0.97)  # at the bar, and better
    assert not allows_every_network(BF16_MIN_AGREEMENT - 0.001, 0.99, 0.97)  # too many flips
    assert not allows_every_network(0.998, 0.968, 0.969)  # one scan lost against the default


def test_engine_serves_in_bfloat16_what_the_manifest_allows(tiny_bundle):
    bundle = copy.copy(load_bundle(tiny_bundle))
    assert bfloat16_networks_for(bundle.manifest) == DEFAULT_BF16_NETWORKS  # no block: the default
    bundle.manifest = {**bundle.manifest, "precision": {"checked": True, "bfloat16_networks": EVERY}}
    engine = InferenceEngine(bundle, "bfloat16", 8)
    assert engine.network_precision == {name: "bfloat16" for name in EVERY}
    # An explicit choice still wins, and float32 stays float32 whatever the manifest says.
    assert InferenceEngine(bundle, "bfloat16", 8, bf16_networks=["vgg16"]).network_precision["resnet50"] == "float32"
    assert set(InferenceEngine(bundle, "float32", 8).network_precision.values()) == {"float32"}
    bundle.manifest = {**bundle.manifest, "precision": {"checked": False, "bfloat16_networks": None}}
    assert InferenceEngine(bundle, "bfloat16", 8).network_precision["resnet50"] == "float32"
