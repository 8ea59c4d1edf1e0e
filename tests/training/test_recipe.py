"""Recipe pieces: option checks, split wiring, head folding, BatchNorm recalibration, feature cache."""

from __future__ import annotations

from pathlib import Path

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
        ({"near_copy_threshold": 1.5}, "near-copy-threshold"),
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


def _near_copies(folder, rng_seed: int = 1) -> dict[str, list[str]]:
    """Add a re-encoded (different bytes, same picture) JPEG copy of each class's first three images."""
    import cv2

    copies = {}
    for name in CLASSES:
        for index in range(3):
            source = folder / name / f"{index:03d}.png"
            image = cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
            target = folder / name / f"{index:03d}-reencoded.jpg"
            cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 80])
            copies.setdefault(name, []).append((source.name, target.name))
    return copies


def test_near_copies_stay_on_one_side_of_the_split(tmp_path):
    """Re-encoded copies (other bytes, same picture) never straddle train and validation (issue 13)."""
    from training.datasets import list_labelled

    data = write_labelled_folder(tmp_path / "data", per_class=10, size=40)
    _near_copies(data)
    items = list_labelled(data)
    for seed in range(4):  # several splits: a straddling pair would show up in one of them
        opts = TrainOptions(data=data, out=tmp_path / "out", image_size=32, seed=seed, val_fraction=0.3)
        split = load_split(opts, lambda f, m: None, items)
        side = {sha: s for sha, _frame, _label, s in split.listing}
        by_name = {Path(item.source).name + item.label: item.sha256 for item in items}
        for name in CLASSES:
            for index in range(3):
                original, copy = by_name[f"{index:03d}.png{name}"], by_name[f"{index:03d}-reencoded.jpg{name}"]
                assert original != copy and side[original] == side[copy], (seed, name, index)
        assert split.grouping["near_copy_threshold"] == 0.98 and split.grouping["groups"] <= 40  # of 52 files
    # Without grouping, by bytes only, some pair straddles the split for one of the seeds.
    straddled = False
    for seed in range(4):
        opts = TrainOptions(data=data, out=tmp_path / "out", image_size=32, seed=seed, val_fraction=0.3,
                            near_copy_threshold=0)
        side = {sha: s for sha, _f, _l, s in load_split(opts, lambda f, m: None, items).listing}
        straddled |= any(side[a] != side[b] for a, b in _pairs(items))
    assert straddled


def _pairs(items):
    by_name = {(item.label, Path(item.source).name): item.sha256 for item in items}
    return [(by_name[(label, f"{i:03d}.png")], by_name[(label, f"{i:03d}-reencoded.jpg")])
            for label in CLASSES for i in range(3)]


def test_near_copies_of_held_out_evaluation_scans_are_not_trained_on(tmp_path):
    from training.datasets import list_labelled

    data = write_labelled_folder(tmp_path / "data", per_class=8, size=40)
    _near_copies(data)
    items = list_labelled(data)
    originals = {sha for sha, _copy in _pairs(items)}
    held_out = [item for item in items if item.sha256 in originals]  # as if in the evaluation split
    rest = [item for item in items if item.sha256 not in originals]
    opts = TrainOptions(data=data, out=tmp_path / "out", image_size=32, val_fraction=0.3)
    split = load_split(opts, lambda f, m: None, rest, held_out)
    used = {sha for sha, *_ in split.listing}
    copies = {copy for _original, copy in _pairs(items)}
    assert not used & copies  # their re-encoded copies were dropped, not trained or validated on
    assert split.counts["near_copies_of_evaluation_dropped"] == 12
    assert len(used) == len(rest) - 12
