"""Retraining in minutes: train_bundle reuses stored backbone features across runs, and continues a
previous bundle's custom CNN (warm start) instead of training it anew."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.labelled_folder import write_labelled_folder
from training.datasets import list_labelled
from training.recipe import (DEFAULT_WARM_START_REPLAY, TrainingError, TrainOptions,
                             read_dataset_list, train_bundle)


def _options(data, out, **kw) -> TrainOptions:
    base = dict(image_size=32, epochs=1, cnn_epochs=1, views=1, batch_size=8, backbone_weights="none", seed=5,
                val_fraction=0.25)
    return TrainOptions(data=data, out=out, **{**base, **kw})


def test_a_retrain_computes_backbone_features_only_for_new_images(tmp_path):
    data = write_labelled_folder(tmp_path / "data", per_class=5, size=40)
    cache = tmp_path / "cache"
    first = train_bundle(_options(data, tmp_path / "b1", models=("resnet50",), feature_cache=cache))
    counts = first["feature_cache"]["per_model"]["resnet50"]
    train, val = first["dataset"]["train"], first["dataset"]["validation"]
    assert counts["stored"] == 0 and counts["computed"] == 2 * train + val
    assert first["feature_cache"]["folder"] == str(cache)

    # Two new scans join (different bytes: another noise seed); everything else is read back.
    more = write_labelled_folder(tmp_path / "more", per_class=1, size=40, seed=7)
    for label in ("glioma", "pituitary"):
        (data / label / "new.png").write_bytes((more / label / "000.png").read_bytes())
    # Warm: the ResNet50 head also starts from the first bundle's (same backbone weights).
    second = train_bundle(_options(data, tmp_path / "b2", models=("resnet50",), feature_cache=cache,
                                   warm_start=tmp_path / "b1"))
    assert second["warm_start"]["heads"] == ["resnet50"] and second["warm_start"]["custom_cnn"] is False
    new = {i.sha256 for i in list_labelled(data) if i.source.endswith("new.png")}
    sides = [row["split"] for row in read_dataset_list(tmp_path / "b2" / "dataset.tsv") if row["sha256"] in new]
    counts = second["feature_cache"]["per_model"]["resnet50"]
    assert counts["computed"] == sum(2 if side == "train" else 1 for side in sides)
    assert counts["stored"] == 2 * second["dataset"]["train"] + second["dataset"]["validation"] - counts["computed"]
    assert counts["weights_sha256"] == first["feature_cache"]["per_model"]["resnet50"]["weights_sha256"]



def test_random_backbones_are_the_same_in_every_run_of_a_seed():
    """What lets a retrain with backbone weights 'none' reuse stored features: each backbone is
    initialised from the run's seed alone, whatever was built before it."""
    import keras

    from models.architectures import build_backbone
    from models.backbones import BackboneWeights
    from training.feature_store import weights_fingerprint
    from training.recipe import component_seed

    def fingerprint(seed: int) -> str:
        keras.utils.set_random_seed(component_seed(seed, "resnet50"))
        return weights_fingerprint(build_backbone("resnet50", 32, BackboneWeights("none")))

    first = fingerprint(5)
    keras.utils.set_random_seed(123)
    build_backbone("vgg16", 32, BackboneWeights("none"))  # other work in between changes nothing
    assert fingerprint(5) == first and fingerprint(6) != first


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A custom-CNN-only bundle trained with seed 1 on a tiny folder."""
    root = tmp_path_factory.mktemp("warm")
    data = write_labelled_folder(root / "data", per_class=5, size=40)
    train_bundle(_options(data, root / "base", models=("custom_cnn",), seed=1))
    return {"data": data, "bundle": root / "base"}


def _kernels(bundle) -> list[np.ndarray]:
    from models.bundle import load_network

    model, _ = load_network(bundle, "custom_cnn")
    return [np.asarray(w) for w in model.trainable_weights]


def test_a_warm_start_continues_the_previous_cnn(base, tmp_path):
    import keras

    from models.bundle import bundle_digest
    from training.cnn_variants import build_cnn
    from training.recipe import component_seed

    # A near-zero rate: the continued CNN must still hold the base's weights.
    warm = train_bundle(_options(base["data"], tmp_path / "warm", models=("custom_cnn",), warm_start=base["bundle"],
                                 warm_start_epochs=1, warm_start_lr=1e-12))
    assert warm["warm_start"] == {"from": str(base["bundle"]), "digest": bundle_digest(base["bundle"]),
                                  "custom_cnn": True, "epochs": 1, "learning_rate": 1e-12,
                                  "replay": DEFAULT_WARM_START_REPLAY,
                                  "frozen_convolutions": 3,  # the deep variant's default
                                  "heads": []}
    assert warm["epochs"]["custom_cnn"] == 1 and warm["training"]["custom_cnn"]["warm_start"] == str(base["bundle"])
    for before, after in zip(_kernels(base["bundle"]), _kernels(tmp_path / "warm")):
        np.testing.assert_allclose(after, before, atol=1e-6)
    # A CNN trained anew in this run (seed 5) would start from other weights altogether.
    keras.utils.set_random_seed(component_seed(5, "custom_cnn"))
    fresh = [np.asarray(w) for w in build_cnn("deep", 32, 4).trainable_weights]
    assert not all(np.allclose(a, b, atol=1e-3) for a, b in zip(_kernels(base["bundle"]), fresh))


def test_a_warm_start_with_replay_trains_on_the_new_scans_and_a_sample_of_the_old(base, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(base["data"], data)
    added = write_labelled_folder(tmp_path / "added", per_class=2, size=40, seed=9)
    for path in added.rglob("*.png"):
        shutil.copy(path, data / path.parent.name / f"new-{path.name}")
    whole = train_bundle(_options(data, tmp_path / "whole", models=("custom_cnn",), warm_start=base["bundle"],
                                  warm_start_epochs=1, warm_start_replay=None))
    replayed = train_bundle(_options(data, tmp_path / "replay", models=("custom_cnn",), warm_start=base["bundle"],
                                     warm_start_epochs=1, warm_start_replay=3))
    train = replayed["dataset"]["train"]
    assert whole["training"]["custom_cnn"]["trained_rows"] == train
    new = train - len(_trained_files(base["bundle"]) & _trained_files(tmp_path / "replay"))
    assert new > 0 and replayed["training"]["custom_cnn"]["trained_rows"] == new + 3 < train
    assert replayed["warm_start"]["replay"] == 3


def _layer_weights(bundle) -> dict[str, list[np.ndarray]]:
    from models.bundle import load_network

    model, _ = load_network(bundle, "custom_cnn")
    assert all(layer.trainable for layer in model.layers)  # freezing is a run's choice, not saved
    return {layer.name: [np.asarray(w) for w in layer.weights] for layer in model.layers if layer.weights}


def test_a_warm_start_with_frozen_convolutions_trains_only_the_later_layers(base, tmp_path):
    import keras

    from models.bundle import load_network

    warm = train_bundle(_options(base["data"], tmp_path / "frozen", models=("custom_cnn",), warm_start=base["bundle"],
                                 warm_start_epochs=1, warm_start_lr=1e-2, warm_start_freeze=3))
    assert warm["warm_start"]["frozen_convolutions"] == 3
    before, after = _layer_weights(base["bundle"]), _layer_weights(tmp_path / "frozen")
    model, _ = load_network(base["bundle"], "custom_cnn")
    convolutions = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Conv2D)]
    frozen = {layer.name for layer in model.layers[:convolutions[3]] if layer.weights}
    assert {"stem_conv", "stem_bn", "block1a_conv", "block1b_bn"} <= frozen and "block2a_conv" not in frozen
    for name in before:
        same = all(np.array_equal(a, b) for a, b in zip(before[name], after[name]))
        # Kernels and BatchNorm statistics of the first three convolutions stay as they were; the rest train.
        assert same == (name in frozen), name


def test_the_freeze_defaults_to_the_deep_cnns_stem_and_first_block_and_zero_trains_every_layer(base, tmp_path):
    assert _options(base["data"], tmp_path).frozen_convolutions() == 3
    assert _options(base["data"], tmp_path, cnn_variant="improved").frozen_convolutions() == 0
    assert _options(base["data"], tmp_path, warm_start_freeze=0).frozen_convolutions() == 0
    train_bundle(_options(base["data"], tmp_path / "all", models=("custom_cnn",), warm_start=base["bundle"],
                          warm_start_epochs=1, warm_start_lr=1e-2, warm_start_freeze=0))
    before, after = _layer_weights(base["bundle"]), _layer_weights(tmp_path / "all")
    assert not any(np.array_equal(before[name][0], after[name][0]) for name in ("stem_conv", "block1a_conv"))


def test_a_warm_start_cannot_freeze_every_convolution(base, tmp_path):
    with pytest.raises(TrainingError, match="has 9 convolutions and at least the last one must train"):
        train_bundle(_options(base["data"], tmp_path / "x", models=("custom_cnn",), warm_start=base["bundle"],
                              warm_start_freeze=9))
    assert not (tmp_path / "x").exists()


def _trained_files(bundle) -> set[str]:
    from training.recipe import read_dataset_list

    return {row["sha256"] for row in read_dataset_list(bundle / "dataset.tsv") if row["split"] == "train"}


def test_warm_training_rows_keep_every_new_scan_and_a_seeded_replay_sample():
    from training.recipe import warm_training_rows

    keys = [f"{name}-0" for name in "abcdefgh"]
    before = {"a", "b", "c", "d", "e"}
    rows = warm_training_rows(keys, before, replay=2, seed=1)
    assert {5, 6, 7} <= set(rows) and len(rows) == 5 and list(rows) == sorted(rows)
    assert list(warm_training_rows(keys, before, replay=2, seed=1)) == list(rows)  # the same for a seed
    assert list(warm_training_rows(keys, before, replay=0, seed=1)) == [5, 6, 7]
    assert list(warm_training_rows(keys, before, replay=99, seed=1)) == list(range(8))
    assert list(warm_training_rows(keys, set(), replay=2, seed=1)) == list(range(8))  # nothing trained before


def test_a_warm_start_bundle_that_cannot_continue_is_refused_before_any_work(base, tmp_path):
    data, bundle = base["data"], base["bundle"]
    with pytest.raises(TrainingError, match="--image-size 32"):
        train_bundle(_options(data, tmp_path / "x", models=("custom_cnn",), image_size=48, warm_start=bundle))
    with pytest.raises(TrainingError, match="--cnn-variant deep"):
        train_bundle(_options(data, tmp_path / "x", models=("custom_cnn",), cnn_variant="improved",
                              warm_start=bundle))
    with pytest.raises(TrainingError, match="holds none of the networks this run trains"):
        train_bundle(_options(data, tmp_path / "x", models=("resnet50",), warm_start=bundle))
    with pytest.raises(TrainingError, match="not a bundle"):
        train_bundle(_options(data, tmp_path / "x", models=("custom_cnn",), warm_start=tmp_path))
    # Three classes where the bundle knows four: its CNN's output layer does not fit.
    three = write_labelled_folder(tmp_path / "three", per_class=4, size=40)
    for path in (three / "pituitary").iterdir():
        path.unlink()
    (three / "pituitary").rmdir()
    with pytest.raises(TrainingError, match="classes"):
        train_bundle(_options(three, tmp_path / "x", models=("custom_cnn",), warm_start=bundle))
    assert not (tmp_path / "x").exists()


def test_a_head_started_from_a_folded_head_computes_the_same_function():
    """unfold_into is fold_standardizer's inverse: a warm head starts exactly where the previous one
    ended, even though this run's features standardise differently (and one channel is constant)."""
    import keras

    from models.architectures import build_head
    from training.heads import Standardizer, fold_standardizer, unfold_into

    rng = np.random.default_rng(3)
    old_features = rng.normal(2.0, 5.0, (80, 12)).astype(np.float32)
    keras.utils.set_random_seed(1)
    previous = build_head("resnet50", 12, 4)
    fold_standardizer(previous, Standardizer.fit(old_features))
    raw = [*previous.get_layer("features").get_weights(), *previous.get_layer("predictions").get_weights()]
    new_features = rng.normal(1.0, 3.0, (60, 12)).astype(np.float32)
    new_features[:, 4] = 7.0  # constant in this run's training set
    standardizer = Standardizer.fit(new_features)
    assert standardizer.constant_channels == 1
    head = build_head("resnet50", 12, 4)
    unfold_into(head, raw, standardizer)
    expected = np.asarray(previous.predict(new_features, verbose=0))
    np.testing.assert_allclose(np.asarray(head.predict(standardizer.apply(new_features), verbose=0)), expected,
                               rtol=1e-4, atol=1e-5)


def test_the_validation_side_stays_put_as_the_pool_grows():
    """A warm-started CNN has trained on the last run's training side; that side must not become this
    run's validation side (beyond the growth of the validation share) when scans are added."""
    import hashlib

    from training.datasets import LabelledImage, stratified_hash_split

    def items(start: int, count: int) -> list[LabelledImage]:
        return [LabelledImage(f"/d/{n}", "ab"[n % 2], hashlib.sha256(str(n).encode()).hexdigest())
                for n in range(start, start + count)]

    old = items(0, 400)
    train, val = stratified_hash_split(old, 0.1, seed=42)
    grown_train, grown_val = stratified_hash_split(old + items(400, 100), 0.1, seed=42)
    moved = {i.sha256 for i in train} & {i.sha256 for i in grown_val}
    assert len(moved) <= len(grown_val) - len(val) == 10
    assert len({i.sha256 for i in val} & {i.sha256 for i in grown_val}) >= len(val) - 10


def test_the_cosine_cnn_is_not_stopped_early_while_its_rate_is_high():
    """On 1,000 shared-folder scans the deep CNN's validation loss was lowest at epoch 1 (0.23
    accuracy) and early stopping ended it at epoch 6 with those weights; from the schedule's second
    half on it is watched (0.76 after 15 epochs)."""
    cosine = TrainOptions(data=".", out=".", cnn_epochs=15).cnn_recipe()
    assert (cosine.schedule, cosine.early_stopping_from) == ("cosine", 7)
    assert TrainOptions(data=".", out=".", cnn_variant="reference").cnn_recipe().early_stopping_from == 0
    warm = TrainOptions(data=".", out=".", warm_start="b").warm_recipe()
    assert (warm.epochs, warm.early_stopping_from, warm.warmup_epochs) == (3, 0, 0.0)
    assert warm.learning_rate == cosine.learning_rate / 10
