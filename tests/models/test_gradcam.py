"""models.gradcam and models.explain: a network that sees one quadrant, the bundle's five models, overlays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import quadrant_net
from tests.helpers.tiny_bundle import synthetic_images

REPO = Path(__file__).resolve().parents[2]


def _assert_lights_up_the_seen_quadrant(answer: dict) -> None:
    # The premise: the network says "bright square" for an image with one in every quadrant,
    # and cannot see one that is only in the bottom-left quadrant.
    assert answer["predicted"] == 1 and answer["probability"] > 0.9
    assert answer["unseen_predicted"] == 0
    assert answer["layer"] == "bright" and answer["map_shape"] == [32, 32]
    # The same square is in all four quadrants; only the one the network sees may light up.
    assert answer["shares"]["top_right"] >= 0.9, answer["shares"]
    row, col = answer["peak"]
    assert 4 <= row <= 12 and 16 + 4 <= col <= 16 + 12, answer["peak"]  # on the seen square (5..10, 21..26)
    # Explaining the other class finds no positive evidence for it anywhere.
    assert answer["other_class_max"] == 0.0
    # The control: the same detector without the mask spreads its heat over all four squares,
    # so the share above comes from what the network sees, not from the picture.
    assert all(0.2 < share < 0.3 for share in answer["unmasked_shares"].values()), answer["unmasked_shares"]


def test_heatmap_of_a_network_that_sees_one_quadrant_lights_up_that_quadrant():
    answer = quadrant_net.answer()
    assert answer["backend"] == "tensorflow"
    _assert_lights_up_the_seen_quadrant(answer)


def _jax_python() -> str | None:
    """This Python if it has JAX, else JAX_PYTHON (e.g. a separate virtualenv), else None."""
    for python in filter(None, (sys.executable, os.environ.get("JAX_PYTHON"))):
        probe = subprocess.run([python, "-c", "import jax, keras"], check=False, capture_output=True, timeout=120,
                               env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"})
        if probe.returncode == 0:
            return python
    return None


JAX_PYTHON = _jax_python()
# A mark, not a fixture: skipping must not first build the session's tiny bundle.
needs_jax = pytest.mark.skipif(JAX_PYTHON is None, reason=(
    "JAX is not installed in this virtualenv (not in requirements.txt) and JAX_PYTHON names no Python "
    "with JAX and Keras; the Grad-CAM JAX shim is not exercised here"))


def _under_jax(*args: str) -> str:
    done = subprocess.run([JAX_PYTHON, *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@needs_jax
def test_the_same_quadrant_heatmap_under_jax():
    answer = json.loads(_under_jax("-m", "tests.helpers.quadrant_net").strip().splitlines()[-1])
    assert answer["backend"] == "jax"
    _assert_lights_up_the_seen_quadrant(answer)


@pytest.fixture(scope="module")
def explainer(tiny_bundle):
    from models.bundle import load_bundle
    from models.explain import Explainer

    return Explainer(load_bundle(tiny_bundle))


def test_every_model_of_the_bundle_is_explained_for_the_class_it_predicted(explainer, tiny_engine):
    images, _ = synthetic_images(per_class=1, image_size=48, seed=5)  # larger than the bundle's 32 px
    layers = {"resnet50": "resnet50/conv5_block3_out", "vgg16": "vgg16/block5_conv3", "custom_cnn": "relu4",
              "svm": "resnet50/conv5_block3_out", "random_forest": "resnet50/conv5_block3_out"}
    assert explainer.model_names == list(layers)
    for image in images[:2]:
        result = tiny_engine.classify([image])[0]["predictions"]
        for name, layer in layers.items():
            explanation = explainer.explain(image, name)
            assert explanation.model == name and explanation.layer == layer
            assert explanation.via == ("resnet50" if name in ("svm", "random_forest") else None)
            # The engine runs BatchNorm-folded copies; the explainer the bundle's own networks.
            assert explanation.label == result[name]["label"]
            assert explanation.confidence == pytest.approx(result[name]["probabilities"][explanation.label], abs=1e-4)
            heat = explanation.heatmap
            assert heat.dtype == np.float32 and heat.ndim == 2
            assert heat.min() >= 0.0 and heat.max() <= 1.0 and heat.max() in (0.0, 1.0)


def test_the_confidence_beside_a_heatmap_is_the_calibrated_one_the_engine_serves(tiny_bundle):
    import copy

    from models.bundle import load_bundle
    from models.engine import InferenceEngine
    from models.explain import Explainer

    bundle = copy.copy(load_bundle(tiny_bundle))
    temperatures = {"resnet50": 3.0, "vgg16": 0.5, "custom_cnn": 2.0, "svm": 4.0, "random_forest": 0.7}
    bundle.manifest = {**bundle.manifest, "calibration": {"temperatures": temperatures,
                                                          "ensemble": {"temperature": 1.5}}}
    engine, explainer = InferenceEngine(bundle), Explainer(bundle)
    image = synthetic_images(per_class=1, image_size=32, seed=9)[0][0]
    result = engine.classify([image])[0]["predictions"]
    for name in temperatures:
        explanation = explainer.explain(image, name)
        served = result[name]["probabilities"][explanation.label]
        assert explanation.confidence == pytest.approx(served, abs=1e-4), name
    # The premise: the temperatures move the served confidence away from the raw one.
    raw = InferenceEngine(load_bundle(tiny_bundle)).classify([image])[0]["predictions"]
    assert any(abs(raw[n]["probabilities"][result[n]["label"]] - result[n]["probabilities"][result[n]["label"]]) > 0.01
               for n in temperatures)


def test_unknown_model_is_refused(explainer):
    with pytest.raises(KeyError, match="ensemble"):
        explainer.explain(np.zeros((32, 32, 3), np.uint8), "ensemble")


def test_overlay_colours_only_where_the_heat_is():
    import cv2

    from models.explain import Explanation, overlay_png

    image = np.full((40, 60), 90, dtype=np.uint8)  # grayscale, not square
    heat = np.array([[0.0, 1.0], [0.0, 0.0]], dtype=np.float32)  # the top-right cell only
    data = overlay_png(image, Explanation("custom_cnn", "glioma", 0.9, heat, "relu4"))
    pixels = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert pixels.shape == (40, 60, 3)
    assert (pixels[30:, :20] == 90).all()  # bottom-left: no heat, the scan unchanged
    top_right = pixels[:8, 52:].reshape(-1, 3).mean(axis=0)
    assert top_right[0] - top_right[2] > 50  # the hot end of JET: red, where the gray had r == b


def test_faint_heat_is_left_uncoloured():
    from models.explain import COLD_BELOW, overlay

    image = np.full((20, 20), 90, dtype=np.uint8)
    faint = overlay(image, np.full((2, 2), COLD_BELOW * 0.9, np.float32))
    assert (faint == 90).all()  # faintly positive everywhere (as the CNN's maps are): the scan unchanged
    warm = overlay(image, np.full((2, 2), COLD_BELOW, np.float32))
    assert (warm != 90).any()


def test_large_scans_are_shrunk_for_the_overlay():
    from models.explain import overlay

    out = overlay(np.zeros((3000, 1500, 3), np.uint8), np.ones((7, 7), np.float32), max_side=1024)
    assert out.shape == (1024, 512, 3)
