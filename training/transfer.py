"""ResNet50/VGG16 on a frozen backbone via the feature cache, and SVM/RF on ResNet50 features."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from training.feature_store import weights_fingerprint
from training.features import build_feature_cache, recalibrate_batchnorm
from training.progress import format_epoch_logs
from training.heads import HeadRecipe, head_features, head_probabilities, train_head

log = logging.getLogger(__name__)

# Images used to re-estimate BatchNorm statistics of a random backbone (a sample is enough).
RECALIBRATION_IMAGES = 256


@dataclass
class SharedFeatures:
    """256-d ResNet50 'features' layer outputs for training (clean + views) and validation."""

    train: np.ndarray
    train_labels: np.ndarray
    val: np.ndarray
    val_labels: np.ndarray


@dataclass
class TransferResult:
    """A trained full transfer model with its validation probabilities and run details."""

    model: object
    val_probabilities: np.ndarray
    history: dict
    details: dict
    features: SharedFeatures | None


def train_transfer_model(
    arch: str,
    split,
    weights,
    options,
    report: Callable[[float, str], None],
    keep_features: bool = False,
    store=None,
    warm_from: tuple[str, str | None] | None = None,
) -> TransferResult:
    """Cache backbone features (reading back what `store`, a persistent
    training.feature_store.FeatureStore, already holds), train the head, assemble backbone + head.

    `warm_from` (a previous bundle, the SHA-256 of its backbone's weights) starts the head from
    that bundle's head when this run's backbone is the very same one.

    Also measures what the same head epochs would cost if the backbone were recomputed
    every epoch (extrapolated from the measured backbone throughput of this run).
    """
    import keras

    from models.architectures import assemble_transfer_model, build_backbone, build_head
    from training.recipe import component_seed

    started = time.perf_counter()
    # Seeded per network: with random weights the backbone is the same in every run of this
    # seed, so its stored features stay valid (the store keys on the weights' hash anyway).
    keras.utils.set_random_seed(component_seed(options.seed, arch))
    backbone = build_backbone(arch, options.image_size, weights)
    recalibrated = 0
    if options.bn_recalibration == "on":
        rng = np.random.default_rng(options.seed)
        sample = rng.choice(len(split.x_train), min(RECALIBRATION_IMAGES, len(split.x_train)), replace=False)
        recalibrated = recalibrate_batchnorm(backbone, arch, split.x_train[np.sort(sample)])
    report(0.01, f"{arch}: computing backbone features ({options.views} augmented views)")
    cache = build_feature_cache(
        backbone, arch, split.x_train, split.x_val, options.views, options.seed, options.batch_size,
        on_progress=lambda f, msg: report(0.9 * f, msg),
        train_keys=split.train_keys if store is not None else None,
        val_keys=split.val_keys if store is not None else None,
        store=store,
    )
    if store is not None:
        report(0.9, f"{arch}: {cache.stored} feature rows read from the feature cache, {cache.computed} computed "
                    f"({cache.seconds:.0f} s)")
    train_x, train_y = cache.training_set(split.y_train)
    # The backbone's identity, recorded in the manifest (a later warm start compares it).
    fingerprint = cache.weights_sha256 or weights_fingerprint(backbone)
    initial = None
    if warm_from is not None:
        initial = _previous_head(arch, fingerprint, warm_from, report)
    head = build_head(arch, int(backbone.output_shape[-1]), len(split.classes))
    recipe = HeadRecipe(epochs=options.epochs, batch_size=options.batch_size)

    def on_epoch(epoch: int, total: int, logs: dict) -> None:
        report(0.9 + 0.1 * epoch / total, f"{arch} epoch {epoch}/{total}: {format_epoch_logs(logs)}")

    head_started = time.perf_counter()
    history = train_head(head, train_x, train_y, cache.val, split.y_val, recipe, on_epoch, initial=initial)
    head_seconds = time.perf_counter() - head_started
    val_probs = head_probabilities(head, cache.val)
    shared = None
    if keep_features:
        shared = SharedFeatures(head_features(head, train_x), train_y,
                                head_features(head, cache.val), split.y_val.copy())
    model = assemble_transfer_model(backbone, head)
    epochs_run = len(history.get("loss", []))
    per_epoch_images = len(split.x_train) + len(split.x_val)
    cached_total = cache.seconds + head_seconds
    details = {
        "bn_recalibrated_layers": recalibrated,
        "epochs_run": epochs_run,
        "feature_cache_images": int(len(train_x) + len(cache.val)),
        "feature_cache_seconds": round(cache.seconds, 2),
        "feature_cache_computed": cache.computed,
        "feature_cache_stored": cache.stored,
        "backbone_weights_sha256": fingerprint,
        "backbone_images_per_second": round(cache.images_per_second, 2),
        "head_seconds": round(head_seconds, 2),
        "head_warm_start": initial is not None,
        "seconds_total": round(time.perf_counter() - started, 2),
    }
    accuracy = float(np.mean(val_probs.argmax(1) == split.y_val))
    if cache.images_per_second > 0:
        # Estimate, not a run: epochs_run x (train + val images) / measured backbone rate.
        recompute = epochs_run * per_epoch_images / cache.images_per_second + head_seconds
        details["recompute_every_epoch_estimate_seconds"] = round(recompute, 1)
        details["speedup_vs_recompute_estimate"] = round(recompute / max(cached_total, 1e-9), 2)
        report(1.0, f"{arch}: validation accuracy {accuracy:.4f} (cache {cache.seconds:.0f} s + head "
                    f"{head_seconds:.0f} s; recomputing the backbone every epoch would take ~{recompute:.0f} s)")
    else:
        report(1.0, f"{arch}: validation accuracy {accuracy:.4f} (every feature from the feature cache, "
                    f"{cache.seconds:.0f} s; head {head_seconds:.0f} s)")
    return TransferResult(model, val_probs, history, details, shared)


def _previous_head(arch: str, fingerprint: str, warm_from: tuple[str, str | None], report) -> list | None:
    """The folded head weights of `arch` in the previous bundle, if its backbone is this one."""
    from models.architectures import FEATURES_LAYER, PREDICTIONS_LAYER
    from models.bundle import load_network

    bundle, expected = warm_from
    if expected != fingerprint:
        report(0.9, f"{arch}: the previous bundle's backbone is another one; its head trains from scratch")
        return None
    previous, _ = load_network(bundle, arch)
    weights = [*previous.get_layer(FEATURES_LAYER).get_weights(), *previous.get_layer(PREDICTIONS_LAYER).get_weights()]
    report(0.9, f"{arch}: the head starts from the previous bundle's (same backbone weights)")
    return weights


def train_estimators(
    names: list[str], features: SharedFeatures, seed: int, staged
) -> tuple[dict[str, object], dict[str, np.ndarray], dict[str, float]]:
    """Fit the SPEC.md SVM and Random Forest on ResNet50 head features; validation probabilities."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import SVC

    fitted: dict[str, object] = {}
    probs: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    for name in names:
        staged(name, 0.0, f"{name}: fitting on {len(features.train)} ResNet50 feature vectors")
        started = time.perf_counter()
        if name == "svm":
            model = SVC(kernel="rbf", gamma="scale", C=1.0, probability=True, random_state=seed)
        else:
            model = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed)
        model.fit(features.train, features.train_labels)
        probs[name] = np.asarray(model.predict_proba(features.val), dtype=np.float32)
        timings[name] = time.perf_counter() - started
        accuracy = float(np.mean(probs[name].argmax(1) == features.val_labels))
        staged(name, 1.0, f"{name}: validation accuracy {accuracy:.4f} ({timings[name]:.0f} s)")
        fitted[name] = model
    return fitted, probs, timings
