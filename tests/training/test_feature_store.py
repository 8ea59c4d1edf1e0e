"""The persistent feature store: hits across runs, what invalidates an entry, crash safety, the bound."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from training.augment import AugmentParams
from training.feature_store import FeatureStore, entry_key, view_identity, weights_fingerprint
from training.features import build_feature_cache

SHA = [f"{i:064x}" for i in range(1, 7)]


def _tiny_backbone(seed: int):
    """A real Keras backbone ([N, 16, 16, 3] -> [N, 12]) with seeded random weights."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(12, 3, strides=2)(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)


def _cache(backbone, store, x_train, train_keys, x_val, val_keys, views=1):
    return build_feature_cache(backbone, "resnet50", x_train, x_val, views=views, seed=3, batch_size=4,
                               train_keys=train_keys, val_keys=val_keys, store=store)


def test_a_second_run_reads_every_feature_back_and_gets_the_same_numbers(tmp_path):
    store = FeatureStore(tmp_path / "cache", 10**8)
    x_train, x_val = _images(5), _images(2, seed=1)
    # The two validation rows are two frames of one multi-frame file.
    train_keys, val_keys = [entry_key(s, 0) for s in SHA[:5]], [entry_key(SHA[5], 0), entry_key(SHA[5], 1)]
    first = _cache(_tiny_backbone(1), store, x_train, train_keys, x_val, val_keys)
    assert (first.computed, first.stored) == (5 + 5 + 2, 0)
    # A new process would build the backbone again: same seed, same weights, same fingerprint.
    second = _cache(_tiny_backbone(1), store, x_train, train_keys, x_val, val_keys)
    assert (second.computed, second.stored) == (0, 12)
    for a, b in ((first.train, second.train), (first.views, second.views), (first.val, second.val)):
        np.testing.assert_array_equal(a, b)
    # Without a store every row is computed: the same features (augmented views drawn per image key).
    plain = _cache(_tiny_backbone(1), None, x_train, train_keys, x_val, val_keys)
    np.testing.assert_allclose(plain.views, first.views, rtol=1e-5, atol=1e-6)
    assert not np.allclose(first.views[0], first.train)


def test_changed_bytes_and_added_images_compute_only_their_own_rows(tmp_path):
    store = FeatureStore(tmp_path / "cache", 10**8)
    backbone = _tiny_backbone(1)
    x_train, x_val = _images(4), _images(1, seed=1)
    keys = [entry_key(s, 0) for s in SHA[:4]]
    _cache(backbone, store, x_train, keys, x_val, [entry_key(SHA[5], 0)])
    # Image 2's bytes changed (new content hash, new pixels) and one new image joined.
    edited = x_train.copy()
    edited[2] = 255 - edited[2]
    grown = np.concatenate([edited, _images(1, seed=9)])
    grown_keys = keys[:2] + [entry_key("ab" * 32, 0), keys[3], entry_key(SHA[4], 0)]
    again = _cache(backbone, store, grown, grown_keys, x_val, [entry_key(SHA[5], 0)])
    assert again.computed == 2 * 2 and again.stored == 3 * 2 + 1  # two rows, clean and one view each
    fresh = _cache(backbone, None, grown, grown_keys, x_val, [entry_key(SHA[5], 0)])
    np.testing.assert_allclose(again.train, fresh.train, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.views, fresh.views, rtol=1e-5, atol=1e-6)


def test_changed_backbone_weights_or_image_size_or_view_miss(tmp_path):
    store = FeatureStore(tmp_path / "cache", 10**8)
    x_train, x_val = _images(3), _images(1, seed=1)
    keys, val_keys = [entry_key(s, 0) for s in SHA[:3]], [entry_key(SHA[5], 0)]
    _cache(_tiny_backbone(1), store, x_train, keys, x_val, val_keys)
    other = _tiny_backbone(2)
    assert weights_fingerprint(other) != weights_fingerprint(_tiny_backbone(1))
    assert _cache(other, store, x_train, keys, x_val, val_keys).computed == 3 + 3 + 1
    # Another seed for the views: the clean rows are still there, the views are not.
    moved = build_feature_cache(_tiny_backbone(1), "resnet50", x_train, x_val, views=1, seed=4, batch_size=4,
                                train_keys=keys, val_keys=val_keys, store=store)
    assert (moved.computed, moved.stored) == (3, 3 + 1)
    fingerprint = weights_fingerprint(_tiny_backbone(1))
    clean16 = store.namespace("resnet50", fingerprint, 16, view_identity(None, None, AugmentParams()), 12)
    clean32 = store.namespace("resnet50", fingerprint, 32, view_identity(None, None, AugmentParams()), 12)
    assert clean16.get(keys)[1] == [] and clean32.get(keys)[1] == [0, 1, 2]


def test_a_torn_entry_is_a_miss_and_a_dead_writers_temporary_file_is_pruned(tmp_path):
    store = FeatureStore(tmp_path / "cache", 10**8)
    space = store.namespace("vgg16", "f" * 64, 16, {"kind": "clean"}, 4)
    space.put([entry_key(SHA[0], 0), entry_key(SHA[1], 0)], np.ones((2, 4), np.float32))
    # A writer that died mid-write of the final file (not our writer: it renames complete files)...
    torn = space.folder / SHA[0][:2] / f"{entry_key(SHA[0], 0)}.npy"
    torn.write_bytes(torn.read_bytes()[:40])
    # ...and one of ours that died before its rename, an hour ago.
    leftover = torn.with_name(torn.name + ".tmp-99-deadbeef")
    leftover.write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(leftover, (old, old))
    rows, missing = space.get([entry_key(SHA[0], 0), entry_key(SHA[1], 0)])
    assert missing == [0] and rows[1].tolist() == [1.0] * 4
    assert not torn.exists() and space.counts.dropped_corrupt == 1
    assert store.prune()["stale_tmp"] == 1 and not leftover.exists()
    np.save(torn, np.zeros(3, np.float32))  # a complete file of the wrong width is no hit either
    assert space.get([entry_key(SHA[0], 0)])[1] == [0]


def test_prune_keeps_the_store_under_its_bound_least_recently_used_first(tmp_path):
    store = FeatureStore(tmp_path / "cache", 10**8)
    space = store.namespace("resnet50", "e" * 64, 16, {"kind": "clean"}, 256)
    keys = [entry_key(s, 0) for s in SHA[:4]]
    space.put(keys, np.zeros((4, 256), np.float32))
    paths = [space.folder / k[:2] / f"{k}.npy" for k in keys]
    for age, path in enumerate(paths):  # keys[0] is the oldest
        stamp = time.time() - 1000 + age
        os.utime(path, (stamp, stamp))
    space.get(keys[:1])  # a hit makes keys[0] the most recently used
    size = paths[0].stat().st_size
    result = store.prune(max_bytes=2 * size)
    assert result["removed"] == 2 and result["bytes"] <= 2 * size
    assert [p.exists() for p in paths] == [True, False, False, True]
    assert store.prune(max_bytes=0)["entries"] == 0 and not any(p.exists() for p in paths)


def test_a_store_needs_content_keys(tmp_path):
    with pytest.raises(ValueError, match="content key"):
        build_feature_cache(_tiny_backbone(1), "resnet50", _images(2), _images(1), views=0, seed=0,
                            store=FeatureStore(tmp_path, 10**6))
