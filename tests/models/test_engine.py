"""models.engine: output shape, equality with the per-model path, agreement, bfloat16."""

from __future__ import annotations

import numpy as np
import pytest

from models.engine import InferenceEngine
from tests.helpers.tiny_bundle import CLASSES, synthetic_images

MEMBERS = ["resnet50", "vgg16", "custom_cnn", "svm", "random_forest"]


@pytest.fixture(scope="module")
def scans() -> np.ndarray:
    """Ten synthetic 32 px scans (not a multiple of the batch size on purpose)."""
    images, _ = synthetic_images(per_class=3, image_size=32, seed=3)
    return images[:10]


def test_output_shape_and_probabilities(tiny_engine, scans):
    results = tiny_engine.classify(scans)
    assert len(results) == len(scans)
    assert tiny_engine.classes == list(CLASSES) and tiny_engine.image_size == 32
    assert tiny_engine.model_names == MEMBERS
    for result in results:
        assert list(result["predictions"]) == MEMBERS
        for entry in [*result["predictions"].values(), result["ensemble"]]:
            probs = entry["probabilities"]
            assert list(probs) == list(CLASSES)
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
            assert entry["label"] == max(probs, key=probs.get)
        agreement = sum(p["label"] == result["ensemble"]["label"] for p in result["predictions"].values())
        assert result["ensemble"]["agreement"] == agreement
        assert 0 <= agreement <= 5


def test_engine_equals_separate_per_model_results(tiny_engine, scans):
    batched = tiny_engine.predict_probabilities(scans)
    for name in MEMBERS:
        separate = tiny_engine.predict_model_probabilities(name, scans)
        np.testing.assert_allclose(batched[name], separate, rtol=1e-4, atol=1e-5, err_msg=name)
        # One scan at a time gives the same answer as the batch.
        single = np.concatenate([tiny_engine.predict_model_probabilities(name, s[None]) for s in scans[:3]])
        np.testing.assert_allclose(batched[name][:3], single, rtol=1e-4, atol=1e-5, err_msg=name)
    mean = np.mean([batched[n] for n in MEMBERS], axis=0)
    np.testing.assert_allclose(batched["ensemble"], mean / mean.sum(1, keepdims=True), rtol=1e-5)


def test_classify_matches_probabilities_and_resizes(tiny_engine, scans):
    big = [np.kron(s, np.ones((2, 2, 1), dtype=np.uint8)) for s in scans[:4]]  # 64 px inputs
    results = tiny_engine.classify(big)
    probs = tiny_engine.predict_probabilities(scans[:4])
    for i, result in enumerate(results):
        got = [result["predictions"]["vgg16"]["probabilities"][c] for c in CLASSES]
        assert np.allclose(got, probs["vgg16"][i], atol=0.05)


def test_ensemble_weights_from_manifest(tiny_bundle, scans):
    from models.bundle import load_bundle

    bundle = load_bundle(tiny_bundle)
    bundle.ensemble_weights = {"svm": 3.0, "random_forest": 1.0}
    engine = InferenceEngine(bundle, batch_size=8)
    probs = engine.predict_probabilities(scans)
    expected = 0.75 * probs["svm"] + 0.25 * probs["random_forest"]
    np.testing.assert_allclose(probs["ensemble"], expected / expected.sum(1, keepdims=True), rtol=1e-5)


def test_never_runs_one_image_at_a_time(tiny_bundle, scans):
    from models.bundle import load_bundle

    engine = InferenceEngine(load_bundle(tiny_bundle), batch_size=4)
    seen: list[int] = []
    forward = engine._batched["vgg16"]

    def counting(x):
        seen.append(len(x))
        return forward(x)

    engine._batched["vgg16"] = counting
    engine.classify(scans)
    assert seen == [4, 4, 2]


def test_bfloat16_default_keeps_resnet_features_exact(tiny_bundle, tiny_engine, scans):
    engine = InferenceEngine.from_bundle(tiny_bundle, precision="bfloat16", batch_size=8)
    assert engine.network_precision == {"resnet50": "float32", "vgg16": "bfloat16", "custom_cnn": "bfloat16"}
    bf16, fp32 = engine.predict_probabilities(scans), tiny_engine.predict_probabilities(scans)
    for name in ("resnet50", "svm", "random_forest"):
        np.testing.assert_allclose(bf16[name], fp32[name], rtol=1e-5, atol=1e-6)


def test_bfloat16_path_runs_and_mostly_agrees(tiny_bundle, tiny_engine, scans):
    engine = InferenceEngine.from_bundle(
        tiny_bundle, precision="bfloat16", batch_size=8, bf16_networks=["resnet50", "vgg16", "custom_cnn"]
    )
    bf16 = engine.predict_probabilities(scans)
    fp32 = tiny_engine.predict_probabilities(scans)
    conv = engine.networks["vgg16"].get_layer("vgg16").get_layer("block1_conv1")
    assert conv.compute_dtype == "bfloat16"
    assert engine.networks["resnet50"].get_layer("resnet50").get_layer("conv1_conv").compute_dtype == "bfloat16"
    for name in MEMBERS:
        assert bf16[name].dtype == np.float32
        np.testing.assert_allclose(bf16[name].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(bf16["custom_cnn"], fp32["custom_cnn"], atol=0.05)


def test_unknown_precision(tiny_bundle):
    with pytest.raises(ValueError):
        InferenceEngine.from_bundle(tiny_bundle, precision="float8")


def _nan_like(forward):
    """`forward` with every output turned into NaN (as XLA's CPU bfloat16 convolutions gave under JAX)."""
    def poisoned(x):
        out = forward(x)
        if isinstance(out, (list, tuple)):
            return [np.full(np.shape(o), np.nan, np.float32) for o in out]
        return np.full(np.shape(out), np.nan, np.float32)
    return poisoned


def test_a_bfloat16_network_giving_nan_is_served_in_float32_from_then_on(tiny_bundle, tiny_engine, scans, caplog):
    engine = InferenceEngine.from_bundle(tiny_bundle, precision="bfloat16", batch_size=8,
                                         bf16_networks=["resnet50", "vgg16"])
    engine._batched["vgg16"] = _nan_like(engine._batched["vgg16"])
    engine._batched["resnet50"] = _nan_like(engine._batched["resnet50"])
    with caplog.at_level("WARNING", logger="models.engine"):
        probs = engine.predict_probabilities(scans)
    fp32 = tiny_engine.predict_probabilities(scans)
    assert engine.network_precision == {"resnet50": "float32", "vgg16": "float32", "custom_cnn": "float32"}
    for name in MEMBERS + ["ensemble"]:
        assert np.isfinite(probs[name]).all(), name
    for name in ("resnet50", "vgg16", "svm", "random_forest"):  # now exactly the float32 engine's
        np.testing.assert_allclose(probs[name], fp32[name], rtol=1e-5, atol=1e-6)
    assert "vgg16 gave non-finite outputs in bfloat16" in caplog.text
    # The one model path (Grad-CAM, per-model checks) uses the rebuilt float32 network too
    np.testing.assert_allclose(engine.predict_model_probabilities("svm", scans),
                               tiny_engine.predict_model_probabilities("svm", scans), rtol=1e-5, atol=1e-6)


def test_the_one_model_path_falls_back_as_well(tiny_bundle, tiny_engine, scans):
    engine = InferenceEngine.from_bundle(tiny_bundle, precision="bfloat16", batch_size=8)
    engine.predict_model_probabilities("vgg16", scans)  # compiles the separate forward
    engine._separate["vgg16"] = _nan_like(engine._separate["vgg16"])
    probs = engine.predict_model_probabilities("vgg16", scans)
    assert engine.network_precision["vgg16"] == "float32"
    np.testing.assert_allclose(probs, tiny_engine.predict_model_probabilities("vgg16", scans), rtol=1e-5, atol=1e-6)


def test_a_float32_network_giving_nan_refuses_to_label(tiny_bundle, scans):
    from models.bundle import load_bundle
    from models.engine import NonFiniteOutputError

    bundle = load_bundle(tiny_bundle)
    kernel = bundle.networks["custom_cnn"].get_layer("predictions").kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))  # real weights, not a stand-in forward
    engine = InferenceEngine(bundle, batch_size=8)
    with pytest.raises(NonFiniteOutputError, match="custom_cnn gave non-finite outputs in float32"):
        engine.classify(scans)


def test_the_forest_is_served_on_one_thread_and_the_bundles_own_is_untouched(tiny_bundle, scans):
    from models.bundle import load_bundle

    bundle = load_bundle(tiny_bundle)
    bundle.estimators["random_forest"].n_jobs = -1  # as training.transfer fits it
    engine = InferenceEngine(bundle, batch_size=8)
    served = engine.estimators["random_forest"]
    assert served.n_jobs == 1 and bundle.estimators["random_forest"].n_jobs == -1
    assert served.estimators_ is bundle.estimators["random_forest"].estimators_  # the trees are shared
    features = np.random.default_rng(0).normal(size=(5, served.n_features_in_)).astype(np.float32)
    np.testing.assert_array_equal(served.predict_proba(features),
                                  bundle.estimators["random_forest"].predict_proba(features))
