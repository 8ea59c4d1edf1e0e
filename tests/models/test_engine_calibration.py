"""The engine applies a bundle's temperatures and review rule; a bundle without them is served as before."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import temperature_scale
from models.engine import InferenceEngine
from tests.helpers.tiny_bundle import synthetic_images
from training.recalibrate import copy_bundle

MEMBERS = ["resnet50", "vgg16", "custom_cnn", "svm", "random_forest"]
TEMPERATURES = {"resnet50": 0.2, "vgg16": 0.1, "custom_cnn": 0.25, "svm": 3.0, "random_forest": 1.7}


@pytest.fixture(scope="module")
def scans() -> np.ndarray:
    images, _ = synthetic_images(per_class=3, image_size=32, seed=5)
    return images


@pytest.fixture(scope="module")
def calibrated_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle's model files with temperatures and a review rule in its manifest."""
    out = tmp_path_factory.mktemp("calibrated") / "bundle"
    copy_bundle(tiny_bundle, out, {
        "calibration": {"method": "test", "temperatures": TEMPERATURES, "ensemble": {"temperature": 0.5}},
        "triage": {"confidence_threshold": 0.6, "min_agreement": 3},
    })
    return out


def test_temperatures_change_probabilities_but_no_models_label(tiny_engine, calibrated_bundle, scans):
    engine = InferenceEngine.from_bundle(calibrated_bundle, precision="float32", batch_size=4)
    plain, calibrated = tiny_engine.predict_probabilities(scans), engine.predict_probabilities(scans)
    for name in MEMBERS:
        np.testing.assert_allclose(calibrated[name], temperature_scale(plain[name], TEMPERATURES[name]),
                                   rtol=1e-4, atol=1e-6, err_msg=name)
        assert np.abs(calibrated[name] - plain[name]).max() > 1e-3, name
        assert (calibrated[name].argmax(1) == plain[name].argmax(1)).all(), name
        # The one-model path (SVM/RF through recomputed features) is calibrated alike.
        np.testing.assert_allclose(engine.predict_model_probabilities(name, scans), calibrated[name],
                                   rtol=1e-4, atol=1e-5, err_msg=name)
    # The ensemble: the weighted mixture of calibrated members, sharpened by its own temperature.
    mixture = np.mean([calibrated[n] for n in MEMBERS], axis=0)
    np.testing.assert_allclose(calibrated["ensemble"], temperature_scale(mixture / mixture.sum(1, keepdims=True), 0.5),
                               rtol=1e-4, atol=1e-6)
    # classify() hands out the calibrated confidence and decides review by the manifest's rule.
    for result, row in zip(engine.classify(scans), calibrated["ensemble"]):
        ensemble = result["ensemble"]
        assert max(ensemble["probabilities"].values()) == pytest.approx(float(row.max()), abs=1e-6)
        expected = row.max() < 0.6 or ensemble["agreement"] < 3
        assert ensemble["needs_review"] is bool(expected)


def test_bundle_without_calibration_is_served_unchanged(tiny_engine, scans):
    raw = tiny_engine.member_probabilities(scans)
    served = tiny_engine.predict_probabilities(scans)
    for name in MEMBERS:
        assert np.array_equal(served[name], raw[name]), name
    weights = tiny_engine.ensemble_weights
    mixed = sum(weights[n] * raw[n] for n in MEMBERS)
    assert np.array_equal(served["ensemble"], mixed / np.sum(mixed, axis=1, keepdims=True))
    assert tiny_engine.triage is None
    assert all(r["ensemble"]["needs_review"] is None for r in tiny_engine.classify(scans[:3]))


def test_copy_refuses_its_own_folder_and_a_tampered_source(tiny_bundle, tmp_path):
    from models.bundle import BundleError
    from training.recalibrate import CalibrationError

    with pytest.raises(CalibrationError):
        copy_bundle(tiny_bundle, tiny_bundle, {})
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "svm.joblib").write_bytes(b"not the svm")
    with pytest.raises(BundleError, match="svm.joblib"):
        copy_bundle(broken, tmp_path / "out", {})
