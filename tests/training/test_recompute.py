"""The recompute-every-epoch baseline: fresh warps per epoch, backbone run every step, folded head."""

from __future__ import annotations

import keras
import numpy as np

from models.architectures import build_backbone, build_head
from models.backbones import BackboneWeights
from training.features import backbone_features
from training.heads import HeadRecipe, head_probabilities
from training.recompute import ImageBatches, train_head_recomputing


def _images(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_training_batches_get_new_warps_every_time():
    images, labels = _images(10), np.arange(10) % 4
    batches = ImageBatches(images, labels, "resnet50", batch_size=4, seed=1, augment=True)
    assert len(batches) == 3
    first = [batches[i] for i in range(len(batches))]
    second = [batches[i] for i in range(len(batches))]
    assert not np.array_equal(first[0][0], second[0][0])
    np.testing.assert_array_equal(first[0][1], second[0][1])
    # The batches hold every image once.
    assert sorted(np.concatenate([y for _, y in second]).tolist()) == sorted(labels.tolist())


def test_validation_batches_are_clean_and_in_order():
    from models.preprocess import preprocess_for

    images, labels = _images(6), np.arange(6) % 4
    batches = ImageBatches(images, labels, "vgg16", batch_size=4, seed=1, augment=False)
    x, y = batches[0]
    np.testing.assert_allclose(x, preprocess_for("vgg16", images[:4]))
    assert y.tolist() == labels[:4].tolist()


def test_recompute_runs_the_backbone_every_epoch_and_folds_the_head(monkeypatch):
    keras.utils.set_random_seed(0)
    backbone = build_backbone("resnet50", 32, BackboneWeights("none"))
    head = build_head("resnet50", int(backbone.output_shape[-1]), 4)
    x_train, y_train = _images(12, seed=1), np.arange(12) % 4
    x_val, y_val = _images(4, seed=2), np.arange(4) % 4
    served = []
    original = ImageBatches.__getitem__

    def recording(self, index):
        batch = original(self, index)
        served.append((self.augment, index))
        return batch

    monkeypatch.setattr(ImageBatches, "__getitem__", recording)
    result = train_head_recomputing(backbone, head, "resnet50", x_train, y_train, x_val, y_val,
                                    HeadRecipe(epochs=3, batch_size=4, patience=3), seed=0)
    assert len(result.history["loss"]) == 3 and result.seconds >= result.standardizer_seconds > 0
    # Training images are served (so pushed through the backbone) in each of the 3 epochs.
    # Each of the 3 epochs serves every training batch (Keras peeks and reads ahead by one
    # or two), so
    # the backbone runs on every training image every epoch.
    training = [index for augment, index in served if augment]
    assert 9 <= len(training) <= 12 and all(training.count(i) >= 3 for i in range(3))
    # After folding, the head takes raw backbone features.
    probs = head_probabilities(head, backbone_features(backbone, "resnet50", x_val))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs.shape == (4, 4)
