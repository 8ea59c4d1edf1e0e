"""Recipe pieces: option checks, split wiring, head folding, BatchNorm recalibration, feature cache."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.labelled_folder import CLASSES, write_labelled_folder
from training.recipe import TrainingError, TrainOptions, load_split, validate_options


def _options(tmp_path, **kw):
    return TrainOptions(data=tmp_path, out=tmp_path / "out", **kw)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"models": ("svm",)}, "add resnet50"),
        ({"models": ("resnet50", "alexnet")}, "unknown model"),
        ({"image_size": 16}, "image-size"),
        ({"views": -1}, "views"),
        ({"cnn_variant": "huge"}, "cnn-variant"),
        ({"val_fraction": 0.0}, "val-fraction"),
    ],
)
def test_bad_options_are_refused_with_a_reason(tmp_path, kw, message):
    with pytest.raises(TrainingError, match=message):
        validate_options(_options(tmp_path, **kw))


def test_missing_data_folder_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="not found"):
        validate_options(TrainOptions(data=tmp_path / "nope", out=tmp_path / "out"))


def test_cnn_recipes():
    reference = TrainOptions(data=".", out=".", cnn_variant="reference", epochs=7).cnn_recipe()
    assert (reference.schedule, reference.learning_rate, reference.label_smoothing) == ("plateau", 1e-4, 0.0)
    assert reference.epochs == 7
    improved = TrainOptions(data=".", out=".", cnn_epochs=3).cnn_recipe()
    assert improved.schedule == "cosine" and improved.epochs == 3 and improved.label_smoothing > 0
    assert TrainOptions(data=".", out=".", epochs=40).cnn_recipe().epochs == 15
    assert TrainOptions(data=".", out=".", epochs=1).cnn_recipe().epochs == 1


def test_split_keeps_duplicates_together_and_encodes_in_class_order(tmp_path):
    write_labelled_folder(tmp_path / "data", per_class=10, size=40, duplicates=3)
    opts = TrainOptions(data=tmp_path / "data", out=tmp_path / "out", image_size=32)
    split = load_split(opts, lambda f, m: None)
    assert split.classes == list(CLASSES)
    assert split.counts["files"] == 4 * 13
    assert split.counts["train"] + split.counts["validation"] == 52
    assert sorted(set(split.y_val.tolist())) == [0, 1, 2, 3]  # stratified
    assert split.x_train.shape[1:] == (32, 32, 3) and split.x_train.dtype == np.uint8
    # Byte-identical copies decode to identical arrays: none may appear on both sides.
    train_rows = {row.tobytes() for row in split.x_train}
    assert not any(row.tobytes() in train_rows for row in split.x_val)
    assert len(split.fingerprint) == 64


def test_folded_head_on_raw_features_equals_head_on_standardised_features():
    import keras

    from models.architectures import build_head
    from training.heads import Standardizer, fold_standardizer

    rng = np.random.default_rng(0)
    raw = (rng.normal(5.0, 3.0, (64, 20)) * rng.uniform(0.01, 100, 20)).astype(np.float32)
    keras.utils.set_random_seed(0)
    head = build_head("resnet50", 20, 4)
    standardizer = Standardizer.fit(raw)
    before = np.asarray(head.predict(standardizer.apply(raw), verbose=0))
    fold_standardizer(head, standardizer)
    after = np.asarray(head.predict(raw, verbose=0))
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


def test_batchnorm_recalibration_sets_population_statistics():
    import keras

    from training.features import recalibrate_batchnorm

    inputs = keras.Input((8, 8, 3))
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(bn(inputs)))
    model.trainable = False
    images = np.random.default_rng(1).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    assert recalibrate_batchnorm(model, "resnet50", images, batch_size=8) == 1
    from models.preprocess import preprocess_for

    x = preprocess_for("resnet50", images)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), x.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-3)
    # Mean of per-batch variances, close to the population variance for equal batches.
    np.testing.assert_allclose(np.asarray(bn.moving_variance), x.var(axis=(0, 1, 2)), rtol=0.1)
    assert bn.trainable is False and bn.momentum == 0.99  # restored


def test_feature_cache_shapes_views_and_determinism():
    import keras

    from training.features import build_feature_cache

    inputs = keras.Input((16, 16, 3))
    flat = keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(inputs))
    backbone = keras.Model(inputs, flat)
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    x_val = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    a = build_feature_cache(backbone, "resnet50", x_train, x_val, views=2, seed=5, batch_size=4)
    b = build_feature_cache(backbone, "resnet50", x_train, x_val, views=2, seed=5, batch_size=4)
    assert a.train.shape == (10, 48) and a.views.shape == (2, 10, 48) and a.val.shape == (3, 48)
    assert np.array_equal(a.views, b.views)
    assert not np.allclose(a.views[0], a.train) and not np.allclose(a.views[0], a.views[1])
    feats, labels = a.training_set(np.arange(10))
    assert feats.shape == (30, 48) and labels.tolist() == list(range(10)) * 3


def test_progress_is_monotonic_and_ends_at_one():
    from training.progress import StagedProgress

    seen = []
    progress = StagedProgress({"a": 1.0, "b": 3.0}, lambda s, f, m: seen.append(f))
    progress("a", 0.5, "x")
    progress("b", 0.0, "y")
    progress("a", 0.1, "late report")  # never moves backwards
    progress("b", 1.0, "z")
    assert seen == sorted(seen) and seen[0] == pytest.approx(0.125) and seen[-1] == pytest.approx(1.0)


def test_cnn_variants_build_and_refuse_unknown():
    from training.cnn_variants import build_cnn

    deep = build_cnn("deep", 32, 4)
    assert deep.output_shape == (None, 4) and deep.name == "custom_cnn"
    assert build_cnn("reference", 64, 4).output_shape == (None, 4)
    with pytest.raises(ValueError):
        build_cnn("reference", 32, 4)  # its 'valid' convolutions need >= 46 px
    with pytest.raises(ValueError, match="unknown"):
        build_cnn("resnet", 32, 4)


def test_stage_costs_follow_execution_order():
    from training.recipe import _stage_costs

    opts = TrainOptions(data=".", out=".")
    assert list(_stage_costs(opts, 100, 10)) == [
        "load", "resnet50", "vgg16", "svm", "random_forest", "custom_cnn", "ensemble", "save"]


def test_constant_training_channels_cannot_move_a_folded_head():
    """A channel that never varied in training is ignored, not amplified ~1,000x (issue 13)."""
    import keras

    from models.architectures import build_head
    from training.heads import Standardizer, fold_standardizer

    rng = np.random.default_rng(0)
    raw = rng.normal(5.0, 3.0, (64, 20)).astype(np.float32)
    raw[:, 3] = 0.25  # a dead unit: the same value on every training image
    raw[:, 7] = 2.0 + rng.normal(0.0, 1e-6, 64).astype(np.float32)  # nearly constant
    keras.utils.set_random_seed(0)
    head = build_head("resnet50", 20, 4)
    standardizer = Standardizer.fit(raw)
    assert standardizer.constant_channels == 2
    fold_standardizer(head, standardizer)
    unusual = raw[:8].copy()
    unusual[:, 3] = 40.0  # the dead unit fires on an input unlike the training images
    unusual[:, 7] = -30.0
    before = np.asarray(head.predict(raw[:8], verbose=0))
    after = np.asarray(head.predict(unusual, verbose=0))
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
