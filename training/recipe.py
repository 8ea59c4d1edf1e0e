"""The training recipe: labelled folder/zip in, verified five-model bundle out (train_bundle)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models import ESTIMATOR_NAMES, MODEL_NAMES
from training.calibration import DEFAULT_REVIEW_TARGET_ACCURACY
from training.cnn import CnnSchedule
from training.cnn_variants import CNN_VARIANTS
from training.datasets import list_labelled
from training.pool import EVALUATION_RULE
from training.progress import ProgressFn, StagedProgress, format_epoch_logs
from training.overlap import write_training_thumbnails
from training.similarity import NEAR_COPY_COSINE

log = logging.getLogger(__name__)

TRANSFER_ARCHES = ("resnet50", "vgg16")
# Beside manifest.json: what the bundle was trained and validated on, one line per item.
DATASET_LIST = "dataset.tsv"
# Forward GFLOP per 224 px image (multiply-add = 2); used only to weigh progress stages.
_GFLOP_224 = {"resnet50": 7.7, "vgg16": 30.7, "custom_cnn": 1.3}


# The cosine schedule is planned over this many epochs unless --cnn-epochs says otherwise:
# on the shared folder the deep CNN reached 96% validation accuracy in 15 (96 px).
DEFAULT_CNN_EPOCHS = 15
# A warm start continues the previous version's custom CNN for this many epochs at a tenth
# of the recipe's peak learning rate (cosine decay, no warmup): see the README's retrain figures.
DEFAULT_WARM_START_EPOCHS = 3
# Old scans a warm-started CNN replays beside the new ones; None: the whole training side. A
# replay of 2,000 was 7.8x faster than a cold run in one bench run and scored higher, but the same
# recipe through the service (another batch order) scored 0.015 lower and the gate kept the active
# version, so it stays an option until measured over several runs (README "Retraining in minutes").
DEFAULT_WARM_START_REPLAY: int | None = None
# A warm-started CNN keeps its first this-many convolutions (with their BatchNorm, in inference
# mode) as the active version learnt them; only the later layers train. 0: every layer trains.
# For the deep variant, 3 (stem and first block): on the whole folder it cut the warm CNN from
# 392 s to 238 s, evaluation accuracy 0.9575 against 0.9556 with every layer training (README
# retrain figures). The 4-convolution variants were not measured and train every layer.
WARM_START_FREEZE_BY_VARIANT = {"deep": 3}
WARM_START_LR_FACTOR = 0.1
# Bound of the persistent feature store unless said otherwise (MB; 0 turns the store off).
DEFAULT_FEATURE_CACHE_MAX_MB = 4096
# Presets a training run may name (`profile`); options given explicitly win over a preset.
# "quick" is the first model `make run` trains so that jobs can start within minutes; the
# full run queued after it replaces it when the gate finds it better (README: first model).
PROFILES: dict[str, dict] = {
    "full": {},
    "quick": {"image_size": 64, "views": 0, "epochs": 10, "cnn_epochs": 3},
}
PROFILE_NOTES = {
    "quick": "quick first model (64 px, no augmented views, 10 head epochs, 3 CNN epochs): "
             "a stopgap so jobs can run; the full run queued after it replaces it when the gate promotes it",
}


class TrainingError(ValueError):
    """Bad training input or options; the message says what to change."""


@dataclass
class TrainOptions:
    """Everything one training run needs (the CLI and the retraining task build this)."""

    data: str | Path
    out: str | Path
    models: tuple[str, ...] = MODEL_NAMES
    epochs: int = 40  # ResNet50/VGG16 heads (early stopping usually ends sooner)
    image_size: int = 128
    batch_size: int = 32
    backbone_weights: str = "imagenet"
    seed: int = 42
    views: int = 1  # augmented views per training image in the backbone feature cache (the default measured in the README)
    cnn_variant: str = "deep"  # deep | improved | reference (training.cnn_variants)
    cnn_epochs: int | None = None  # default: min(epochs, DEFAULT_CNN_EPOCHS)
    cnn_learning_rate: float | None = None  # default: 2e-3 (improved) / 1e-4 (reference)
    cnn_schedule: str | None = None  # default: cosine (improved) / plateau (reference)
    val_fraction: float = 0.1
    # Images whose 32 px grey thumbnails reach this cosine are near copies: they stay on one
    # side of the split, and near copies of the evaluation split are not trained on (0: off,
    # only byte-identical files group). training.similarity measures it.
    near_copy_threshold: float = NEAR_COPY_COSINE
    # Hold out the fixed evaluation split (training.pool) of the listed folder as an untouched
    # test part, scored once at the end (test_metrics.json). The service's runs hold it out
    # themselves (their gate scores it), so this is for `python -m training train`.
    test_part: bool = False
    # "on" re-estimates BatchNorm statistics of a random ResNet50 before caching; measured
    # harmful (96 px, 1,500 images: 57% vs 85% validation accuracy), so off by default.
    bn_recalibration: str = "off"
    workers: int | None = None  # decode threads
    # A folder of backbone features kept across runs (training.feature_store); None: this run only.
    feature_cache: str | Path | None = None
    feature_cache_max_mb: int = DEFAULT_FEATURE_CACHE_MAX_MB
    # A bundle whose custom CNN this run continues from (a few epochs at a low rate) instead of
    # training one from scratch, and whose heads start this run's where the backbone is the same
    # (they then stop early after a few epochs); its image size, CNN variant and classes must match.
    warm_start: str | Path | None = None
    warm_start_epochs: int = DEFAULT_WARM_START_EPOCHS
    warm_start_lr: float | None = None  # default: WARM_START_LR_FACTOR x the recipe's peak rate
    # A warm-started CNN trains on the scans the warm-start bundle did not train on plus a replay
    # sample of at most this many it did (seeded); None: the whole training side.
    warm_start_replay: int | None = DEFAULT_WARM_START_REPLAY
    # A warm-started CNN's first N convolutions stay frozen (freeze_leading_convolutions);
    # None: the CNN variant's default (frozen_convolutions()).
    warm_start_freeze: int | None = None
    # The review threshold is the lowest calibrated ensemble confidence at which the validation
    # scans accepted without review reach this accuracy (REVIEW_TARGET_ACCURACY for the service).
    review_target_accuracy: float = DEFAULT_REVIEW_TARGET_ACCURACY
    # Free text recorded in the manifest (e.g. "quick first model"); profile names a preset.
    notes: str = ""
    profile: str = "full"
    # Check on validation whether every network may serve in bfloat16 (training.precision_check).
    precision_check: bool = True

    def cnn_recipe(self) -> CnnSchedule:
        """The custom CNN schedule: SPEC.md's for 'reference', warmup+cosine for 'improved'."""
        reference = self.cnn_variant == "reference"
        schedule = self.cnn_schedule or ("plateau" if reference else "cosine")
        epochs = self.cnn_epochs or min(self.epochs, DEFAULT_CNN_EPOCHS)
        return CnnSchedule(
            epochs=epochs,
            # Cosine: no early stop while the rate is high (the first half); plateau: SPEC.md's.
            early_stopping_from=0 if schedule == "plateau" else epochs // 2,
            batch_size=self.batch_size,
            learning_rate=self.cnn_learning_rate or (1e-4 if schedule == "plateau" else 2e-3),
            schedule=schedule,
            label_smoothing=0.0 if schedule == "plateau" else 0.1,
            weight_decay=0.0 if schedule == "plateau" else 5e-4,
        )

    def frozen_convolutions(self) -> int:
        """How many leading convolutions a warm-started CNN keeps frozen in this run."""
        if self.warm_start_freeze is not None:
            return self.warm_start_freeze
        return WARM_START_FREEZE_BY_VARIANT.get(self.cnn_variant, 0)

    def warm_recipe(self) -> CnnSchedule:
        """The schedule continuing a trained CNN: few epochs, a low peak rate, no warmup."""
        cold = self.cnn_recipe()
        return dataclasses.replace(
            cold, epochs=self.warm_start_epochs, warmup_epochs=0.0, early_stopping_from=0,
            learning_rate=self.warm_start_lr or cold.learning_rate * WARM_START_LR_FACTOR)


@dataclass
class _Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: list[str]
    encoder: object
    fingerprint: str
    counts: dict = field(default_factory=dict)
    # (sha256, frame, label, "train" | "validation") of every item: the bundle's dataset.tsv
    listing: list = field(default_factory=list)
    # Content key (sha256-frame) of every decoded row: the persistent feature store's keys.
    train_keys: list = field(default_factory=list)
    val_keys: list = field(default_factory=list)
    # How the items were grouped for the split (training.grouping's summary).
    grouping: dict = field(default_factory=dict)


def validate_options(options: TrainOptions) -> None:
    """Raise TrainingError for options that cannot work, before any heavy work starts."""
    models = tuple(options.models)
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown or not models:
        raise TrainingError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODEL_NAMES)}"
        )
    if any(m in ESTIMATOR_NAMES for m in models) and "resnet50" not in models:
        raise TrainingError("svm and random_forest use ResNet50 features: add resnet50 to --models")
    if options.image_size < 32:
        raise TrainingError(f"--image-size must be at least 32 (got {options.image_size})")
    if options.epochs < 1 or (options.cnn_epochs is not None and options.cnn_epochs < 1):
        raise TrainingError("--epochs must be at least 1")
    if options.batch_size < 1:
        raise TrainingError("--batch-size must be at least 1")
    if options.views < 0:
        raise TrainingError("--views must be 0 or more")
    if not 0.0 <= options.near_copy_threshold <= 1.0:
        raise TrainingError(f"--near-copy-threshold must be between 0 (off) and 1, got {options.near_copy_threshold}")
    if not 0.0 < options.val_fraction < 0.5:
        raise TrainingError("--val-fraction must be between 0 and 0.5")
    if not 0.0 < options.review_target_accuracy <= 1.0:
        raise TrainingError(f"--review-target-accuracy must be above 0 and at most 1, "
                            f"got {options.review_target_accuracy}")
    if options.cnn_variant not in CNN_VARIANTS:
        raise TrainingError(f"--cnn-variant must be one of {', '.join(CNN_VARIANTS)}")
    if options.bn_recalibration not in ("on", "off"):
        raise TrainingError("--bn-recalibration must be on or off")
    if options.feature_cache_max_mb < 0:
        raise TrainingError("--feature-cache-max-mb must be 0 (no persistent cache) or more")
    if options.warm_start is not None:
        if not (Path(options.warm_start) / "manifest.json").is_file():
            raise TrainingError(f"--warm-start {options.warm_start} is not a bundle folder (no manifest.json)")
        if options.warm_start_epochs < 1:
            raise TrainingError("--warm-start-epochs must be at least 1")
        if options.frozen_convolutions() < 0:
            raise TrainingError("--warm-start-freeze must be 0 or more")
    if not Path(options.data).exists():
        raise TrainingError(f"training data not found: {options.data}")


def load_split(options: TrainOptions, report, items: list | None = None,
               held_out: list | None = None) -> _Split:
    """List (or take `items`), decode them, split by near-copy group and class, and encode.

    Items whose picture is a near copy of a `held_out` one (the fixed evaluation split) are
    dropped; the rest are split into train and validation by whole near-copy groups
    (training.grouping), so no picture sits on both sides.
    """
    from training.datasets import (
        dataset_fingerprint, fit_label_encoder, list_labelled, load_image_array, stratified_hash_split,
    )
    from training.grouping import group_items
    from training.similarity import thumbnails

    items = list_labelled(options.data) if items is None else items
    classes_found = sorted({item.label for item in items})
    if len(classes_found) < 2:
        raise TrainingError(f"need at least two class folders with images in {options.data}, "
                            f"found {classes_found or 'none'}")
    encoder = fit_label_encoder(item.label for item in items)
    report(0.02, f"decoding {len(items)} images in {len(classes_found)} classes at {options.image_size} px")
    x_all, kept = load_image_array(items, options.image_size, options.workers, on_error="skip")
    skipped = len(items) - len(set(kept))
    if skipped:
        log.warning("%d files could not be decoded and were skipped", skipped)
    rows_of: dict[int, list[int]] = defaultdict(list)
    for row, index in enumerate(kept):
        rows_of[index].append(row)
    report(0.85, f"decoded {len(x_all)} images; grouping near copies")
    thumbs: dict[str, np.ndarray] = {}
    held_thumbs = np.zeros((0, 0), np.float32)
    if options.near_copy_threshold:
        firsts = {items[index].sha256: rows[0] for index, rows in sorted(rows_of.items())}
        shas = list(firsts)
        thumbs = dict(zip(shas, thumbnails(x_all[[firsts[sha] for sha in shas]])))
        if held_out:
            held_images, _ = load_image_array(held_out, options.image_size, options.workers, on_error="skip")
            held_thumbs = thumbnails(held_images)
    grouping = group_items([item.sha256 for item in items], thumbs, held_thumbs, options.near_copy_threshold)
    candidates = [items[i] for i in grouping.kept]
    if grouping.dropped:
        log.info("%d items are near copies of held-out evaluation scans and are not trained on",
                 len(grouping.dropped))
    train_items, val_items = stratified_hash_split(candidates, options.val_fraction, options.seed,
                                                   group_keys=grouping.keys)
    if not val_items or not train_items:
        raise TrainingError(f"{len(items)} images are too few for a train/validation split")
    position = {id(item): index for index, item in enumerate(items)}

    def take(subset):
        rows, sub_kept = [], []
        for new_index, item in enumerate(subset):
            for row in rows_of.get(position[id(item)], ()):
                rows.append(row)
                sub_kept.append(new_index)
        y = encoder.transform([subset[i].label for i in sub_kept]).astype(np.int32)
        return x_all[rows], y, row_keys(subset, sub_kept)

    x_train, y_train, train_keys = take(train_items)
    x_val, y_val, val_keys = take(val_items)
    del x_all
    if len(x_train) == 0 or len(x_val) == 0:
        raise TrainingError("no decodable images left on one side of the split")
    report(1.0, f"{len(x_train)} train / {len(x_val)} validation images in "
                f"{grouping.summary['groups']} groups")
    listing = [(i.sha256, i.frame, i.label, side) for side, subset in (("train", train_items),
                                                                       ("validation", val_items))
               for i in subset]
    return _Split(
        x_train, y_train, x_val, y_val,
        classes=[str(c) for c in encoder.classes_],
        encoder=encoder,
        fingerprint=dataset_fingerprint(items),
        counts={"files": len(items), "train": int(len(x_train)), "validation": int(len(x_val)),
                "skipped_undecodable": skipped,
                "near_copies_of_evaluation_dropped": len(grouping.dropped)},
        listing=listing,
        train_keys=train_keys,
        val_keys=val_keys,
        grouping=grouping.summary,
    )


def row_keys(items: list, kept: list[int]) -> list[str]:
    """The feature-store key of each decoded row: its item's content hash and its frame (a
    multi-frame item repeats in `kept`, one row per frame)."""
    from training.feature_store import entry_key

    frames_seen: Counter = Counter()
    keys = []
    for index in kept:
        item = items[index]
        frame = item.frame if item.frame is not None else frames_seen[index]
        frames_seen[index] += 1
        keys.append(entry_key(item.sha256, frame))
    return keys


def component_seed(seed: int, name: str) -> int:
    """A seed for one network derived from the run's seed and its name.

    Each network is initialised right after seeding with this, so its initial weights depend
    on the run's seed alone, not on which other networks were built before it: a retrain with
    `--backbone-weights none` gets bit-identical random backbones, and so reuses their stored
    features (training.feature_store keys on a hash of the actual weights).
    """
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "big")


def open_feature_store(options: TrainOptions):
    """The persistent feature store the options name, or None (none named, or bound 0)."""
    from training.feature_store import FeatureStore

    if options.feature_cache is None or options.feature_cache_max_mb == 0:
        return None
    return FeatureStore(options.feature_cache, options.feature_cache_max_mb * 1024 * 1024)


def _precision_block(options: TrainOptions, manifest: dict, networks: dict, estimators: dict, split: "_Split",
                     float32_labels: np.ndarray) -> dict:
    """Which networks the new bundle may serve in bfloat16 (training.precision_check), on validation."""
    from models.bundle import Bundle
    from training.precision_check import check_bfloat16

    if not options.precision_check:
        return {"checked": False, "reason": "not checked (--precision-check off)",
                "bfloat16_networks": None}
    unsaved = Bundle(path=Path(options.out), manifest=manifest, classes=list(split.classes),
                     image_size=options.image_size, networks=networks, estimators=estimators,
                     label_encoder=split.encoder, ensemble_weights=manifest["ensemble_weights"])
    block = check_bfloat16(unsaved, split.x_val, float32_labels, split.y_val, options.batch_size)
    if block["checked"]:
        log.info("bfloat16 check on %d validation scans: every network agrees on %.4f of ensemble labels "
                    "(%d flips); serving %s in bfloat16", block["images"], block["every_network_agreement"],
                    block["flips"], ", ".join(block["bfloat16_networks"]))
    return block


def _stage_costs(options: TrainOptions, n_train: int, n_val: int) -> dict[str, float]:
    """Relative cost of each stage (in 224-px GFLOP) so overall progress moves evenly."""
    scale = (options.image_size / 224.0) ** 2
    costs = {"load": 0.02 * (n_train + n_val)}
    passes = n_train * (1 + options.views) + n_val
    for arch in TRANSFER_ARCHES:
        if arch in options.models:
            costs[arch] = passes * _GFLOP_224[arch] * scale
    # Dict order is the order train_bundle runs the stages (estimators before the CNN).
    for name in ESTIMATOR_NAMES:
        if name in options.models:
            costs[name] = 0.05 * n_train * (1 + options.views)
    if "custom_cnn" in options.models:
        # Training costs ~3 forward passes per image per epoch.
        epochs = options.warm_start_epochs if options.warm_start else options.cnn_recipe().epochs
        costs["custom_cnn"] = epochs * n_train * 3 * _GFLOP_224["custom_cnn"] * scale
    costs["ensemble"] = 0.01 * n_val
    costs["save"] = 0.05 * n_val
    return costs


def train_bundle(options: TrainOptions, progress: ProgressFn | None = None, items: list | None = None,
                 evaluation_held_out: bool = False, held_out: list | None = None) -> dict:
    """Train the selected models, fit ensemble weights on validation, save and return the manifest.

    `items` (LabelledImage) replaces listing `options.data` (a run's pool of folder files and
    reviewed scans). With `evaluation_held_out` the items must hold nothing of the fixed
    evaluation split (training.pool); the bundle records that, and lists what it trained on
    in dataset.tsv. `held_out` (the evaluation split's items) only serves to drop near copies
    of them from training.
    """
    import keras

    from models.backbones import resolve_backbone_weights
    from models.bundle import save_bundle
    from training.calibration import fit_calibration, model_metrics
    from training.ensemble import agreement_counts
    from training.plots import plot_training_history
    from training.transfer import train_estimators, train_transfer_model

    validate_options(options)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    models = [m for m in MODEL_NAMES if m in options.models]
    # Resolve weights first: a missing ImageNet file must fail before minutes of decoding.
    weights = {arch: resolve_backbone_weights(options.backbone_weights, arch)
               for arch in TRANSFER_ARCHES if arch in models}
    keras.utils.set_random_seed(options.seed)

    if options.test_part and items is None:
        from training.pool import build_pool

        pool = build_pool(list_labelled(options.data), [])
        items, held_out, evaluation_held_out = pool.train, pool.evaluation, True
        if not held_out:
            raise TrainingError(f"{options.data} has no image in the test part ({EVALUATION_RULE}); "
                                "add images or train with --test-part off")
    if evaluation_held_out:
        from training.pool import check_disjoint

        check_disjoint(items if items is not None else list_labelled(options.data))
    warm_manifest = check_warm_start(options) if options.warm_start is not None else None
    prelim = StagedProgress({"load": 1.0}, progress)
    t0 = time.perf_counter()
    split = load_split(options, prelim.stage("load"), items, held_out)
    timings["load"] = time.perf_counter() - t0
    warm_cnn = None
    if warm_manifest is not None:
        if [str(c) for c in warm_manifest["classes"]] != list(split.classes):
            raise TrainingError(f"--warm-start bundle's classes {warm_manifest['classes']} are not this run's "
                                f"{split.classes}: train from scratch")
        if "custom_cnn" in options.models and "custom_cnn" in warm_manifest["models"]:
            warm_cnn = _load_warm_cnn(options)
    store = open_feature_store(options)
    staged = StagedProgress(_stage_costs(options, len(split.x_train), len(split.x_val)), progress)
    staged("load", 1.0, f"loaded {len(split.x_train) + len(split.x_val)} images")

    networks: dict[str, object] = {}
    estimators: dict[str, object] = {}
    val_probs: dict[str, np.ndarray] = {}
    histories: dict[str, dict] = {}
    details: dict[str, dict] = {}
    resnet_features = None
    for arch in TRANSFER_ARCHES:
        if arch not in models:
            continue
        result = train_transfer_model(arch, split, weights[arch], options, staged.stage(arch),
                                      keep_features=(arch == "resnet50"), store=store,
                                      warm_from=_warm_head_source(options, warm_manifest, arch))
        networks[arch] = result.model
        val_probs[arch] = result.val_probabilities
        histories[arch] = result.history
        details[arch] = result.details
        timings[arch] = result.details["seconds_total"]
        if arch == "resnet50":
            resnet_features = result.features

    wanted_estimators = [m for m in ESTIMATOR_NAMES if m in models]
    if wanted_estimators:
        fitted, probs, est_timings = train_estimators(
            wanted_estimators, resnet_features, options.seed, staged
        )
        estimators.update(fitted)
        val_probs.update(probs)
        timings.update(est_timings)
    resnet_features = None  # release the cached features before the CNN trains

    if "custom_cnn" in models:
        t0 = time.perf_counter()
        continued = warm_cnn is not None
        model, history, recipe, rows = _train_custom_cnn(split, options, staged.stage("custom_cnn"), warm_cnn)
        warm_cnn = None
        networks["custom_cnn"] = model
        histories["custom_cnn"] = history
        val_probs["custom_cnn"] = np.asarray(
            model.predict(split.x_val.astype(np.float32) / 255.0, batch_size=64, verbose=0))
        details["custom_cnn"] = {"variant": options.cnn_variant, "recipe": asdict(recipe),
                                 "epochs_run": len(history.get("loss", [])),
                                 "warm_start": str(options.warm_start) if continued else None,
                                 "trained_rows": rows}
        timings["custom_cnn"] = time.perf_counter() - t0

    staged("ensemble", 0.0, "calibrating and fitting ensemble weights on validation")
    # Temperatures, weights (on the calibrated members), the ensemble's temperature and the
    # review threshold, all on validation; the validation figures below are the calibrated ones.
    calibrated = fit_calibration({m: val_probs[m] for m in models}, split.y_val,
                                 options.review_target_accuracy)
    fit = calibrated.ensemble_fit
    ordered = {m: calibrated.probabilities[m] for m in models}
    ensemble_probs = calibrated.probabilities["ensemble"]
    metrics = {m: model_metrics(split.y_val, p, split.classes) for m, p in ordered.items()}
    metrics["ensemble"] = model_metrics(split.y_val, ensemble_probs, split.classes)
    agreement = agreement_counts(ordered, ensemble_probs)
    triage = calibrated.triage["validation"]
    staged("ensemble", 1.0, f"ensemble ({fit.method}) validation accuracy {fit.accuracy:.4f}, "
                            f"ECE {metrics['ensemble']['ece']:.4f}; {triage['coverage']:.1%} accepted "
                            f"without review")

    timings["total_before_save"] = time.perf_counter() - started
    manifest = {
        "classes": split.classes,
        "image_size": options.image_size,
        "backbone_weights": _weights_manifest(options.backbone_weights, weights),
        "custom_cnn_variant": options.cnn_variant if "custom_cnn" in models else None,
        "training_data_sha256": split.fingerprint,
        "validation_metrics": metrics,
        "ensemble_weights": fit.weights,
        "calibration": calibrated.manifest,
        "triage": calibrated.triage,
        "ensemble_fit": {"method": fit.method, "validation_accuracy": fit.accuracy,
                         "best_member": fit.best_member,
                         "best_member_accuracy": fit.best_member_accuracy,
                         "agreement_histogram": {str(k): int(np.sum(agreement == k))
                                                 for k in range(len(models) + 1)}},
        "epochs": {"heads": options.epochs,
                   "custom_cnn": details.get("custom_cnn", {}).get("recipe", {}).get("epochs")},
        "profile": options.profile,
        "notes": options.notes,
        "warm_start": _warm_start_manifest(options, details),
        "feature_cache": _feature_cache_manifest(store, details),
        "seed": options.seed,
        "views": options.views,
        "val_fraction": options.val_fraction,
        "dataset": split.counts,
        "split": {"method": "near-copy groups" if split.grouping.get("near_copy_threshold") else "content hash",
                  **split.grouping},
        "evaluation_split": {"rule": EVALUATION_RULE, "held_out": evaluation_held_out,
                             "test_part": bool(options.test_part and held_out)},
        "training": details,
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    manifest["precision"] = _precision_block(options, manifest, networks, estimators, split,
                                             np.argmax(ensemble_probs, axis=1))
    staged("save", 0.0, f"saving bundle to {options.out}")
    saved = save_bundle(options.out, networks=networks, estimators=estimators,
                        label_encoder=split.encoder, manifest=manifest)
    write_dataset_list(Path(options.out) / DATASET_LIST, split.listing + [
        (item.sha256, item.frame, item.label, "test") for item in (held_out or [])])
    # What evaluate needs to spot near copies of what this bundle learned from (training.overlap).
    write_training_thumbnails(options.out, [*split.train_keys, *split.val_keys],
                              ["train"] * len(split.train_keys) + ["validation"] * len(split.val_keys),
                              [*split.x_train, *split.x_val])
    plot_dir = Path(options.out) / "plots"
    plot_dir.mkdir(exist_ok=True)
    plot_training_history(histories, plot_dir / "training_history.png")
    if store is not None:
        store.prune()
    staged("save", 1.0, f"bundle saved in {time.perf_counter() - started:.0f} s")
    if options.test_part and held_out:
        from training.holdout import score_test_part, write_test_metrics
        from training.similarity import thumbnails

        # Scored once, after everything was chosen on validation; float32 like the figures above.
        scored = score_test_part(options.out, held_out, thumbnails(split.x_train), split.y_train,
                                 batch_size=options.batch_size)
        write_test_metrics(options.out, scored)
        saved = {**saved, "test_metrics": scored}
    return saved


def check_warm_start(options: TrainOptions) -> dict:
    """Refuse (TrainingError) a warm-start bundle that cannot continue in this run; return its manifest.

    Its custom CNN continues this run's (same variant), and its ResNet50/VGG16 heads start this
    run's heads when the backbones are the same; it must be at this run's image size and hold at
    least one of the networks this run trains. Checked before any data is read (classes later).
    """
    from models.bundle import BundleError, verify_bundle

    try:
        manifest = verify_bundle(options.warm_start)
    except BundleError as exc:
        raise TrainingError(f"--warm-start {options.warm_start}: {exc}") from exc
    shared = [m for m in ("custom_cnn", *TRANSFER_ARCHES) if m in options.models and m in manifest.get("models", [])]
    if not shared:
        raise TrainingError(f"--warm-start {options.warm_start} holds none of the networks this run trains "
                            f"({', '.join(options.models)}) to continue")
    if int(manifest["image_size"]) != options.image_size:
        raise TrainingError(f"--warm-start bundle is {manifest['image_size']} px but this run trains at "
                            f"{options.image_size} px: use --image-size {manifest['image_size']}")
    variant = manifest.get("custom_cnn_variant") or "improved"
    if "custom_cnn" in shared and variant != options.cnn_variant:
        raise TrainingError(f"--warm-start bundle's custom CNN is '{variant}' but this run trains "
                            f"'{options.cnn_variant}': use --cnn-variant {variant}")
    frozen = options.frozen_convolutions()
    if "custom_cnn" in shared and frozen:
        from training.cnn_variants import build_cnn

        # Built, not loaded: the architecture alone says how many convolutions there are.
        _check_freeze(build_cnn(variant, options.image_size, len(manifest["classes"])), frozen)
    return manifest


def _convolution_positions(model) -> list[int]:
    """Indices in `model.layers` of its Conv2D layers (what --warm-start-freeze counts)."""
    import keras

    return [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Conv2D)]


def _check_freeze(model, count: int) -> list[int]:
    """`model`'s convolution positions; TrainingError when freezing `count` would leave none training."""
    positions = _convolution_positions(model)
    if count >= len(positions):
        raise TrainingError(f"--warm-start-freeze {count}: the custom CNN has {len(positions)} convolutions "
                            "and at least the last one must train")
    return positions


def _warm_head_source(options: TrainOptions, manifest: dict | None, arch: str) -> tuple[str, str | None] | None:
    """(warm-start bundle, SHA-256 of its `arch` backbone's weights) when it holds that network."""
    if manifest is None or arch not in manifest.get("models", []):
        return None
    recorded = ((manifest.get("feature_cache") or {}).get("per_model") or {}).get(arch) or {}
    return str(options.warm_start), recorded.get("weights_sha256")


def _load_warm_cnn(options: TrainOptions):
    """The warm-start bundle's custom CNN."""
    from models.bundle import load_network

    model, _ = load_network(options.warm_start, "custom_cnn")
    return model


def _warm_start_manifest(options: TrainOptions, details: dict) -> dict | None:
    if options.warm_start is None:
        return None
    from models.bundle import bundle_digest

    recipe = options.warm_recipe()
    continued = (details.get("custom_cnn") or {}).get("warm_start") is not None
    return {"from": str(options.warm_start), "digest": bundle_digest(options.warm_start),
            "custom_cnn": continued, "epochs": recipe.epochs if continued else None,
            "learning_rate": recipe.learning_rate if continued else None,
            "replay": options.warm_start_replay if continued else None,
            "frozen_convolutions": options.frozen_convolutions() if continued else None,
            "heads": [arch for arch, d in details.items() if d.get("head_warm_start")]}


def _feature_cache_manifest(store, details: dict) -> dict:
    """Where features came from: the persistent store (if any) and per backbone how many rows
    were read back from it and how many went through the backbone."""
    per_model = {arch: {"stored": d.get("feature_cache_stored", 0), "computed": d.get("feature_cache_computed", 0),
                        "weights_sha256": d.get("backbone_weights_sha256")}
                 for arch, d in details.items() if "feature_cache_computed" in d}
    return {"folder": str(store.root) if store is not None else None, "per_model": per_model}


def write_dataset_list(path: Path, listing: list) -> None:
    """dataset.tsv: sha256, frame (empty: every frame), label and side of each item, sorted."""
    lines = ["sha256\tframe\tlabel\tsplit"]
    lines += [f"{sha}\t{'' if frame is None else frame}\t{label}\t{side}"
              for sha, frame, label, side in sorted(listing, key=lambda row: (row[0], row[1] or 0, row[3]))]
    path.write_text("\n".join(lines) + "\n")


def read_dataset_list(path: Path) -> list[dict[str, str]]:
    """The rows of a bundle's dataset.tsv as dicts (sha256, frame, label, split)."""
    header, *rows = path.read_text().splitlines()
    names = header.split("\t")
    return [dict(zip(names, row.split("\t"))) for row in rows]


def bundle_hashes(bundle: str | Path, sides: tuple[str, ...]) -> set[str]:
    """SHA-256 of the files on `sides` ("train", "validation", "test") of a bundle's dataset.tsv;
    empty for a bundle without one."""
    listed = Path(bundle) / DATASET_LIST
    if not listed.is_file():
        return set()
    return {row["sha256"] for row in read_dataset_list(listed) if row["split"] in sides}


def _weights_manifest(spec: str, weights: dict) -> dict:
    """{mode, path, sha256} of the first backbone, plus every backbone's own entry."""
    if not weights:
        return {"mode": None, "path": None, "sha256": None, "per_model": {}, "requested": spec}
    first = next(iter(weights.values())).to_manifest()
    return {**first, "per_model": {a: w.to_manifest() for a, w in weights.items()}, "requested": spec}


def _train_custom_cnn(split: _Split, options: TrainOptions, report, warm=None):
    """Build (or continue `warm`, a trained custom CNN) and train the custom CNN; report every epoch."""
    import keras

    from training.cnn import train_cnn
    from training.cnn_variants import build_cnn

    if warm is not None:
        recipe, model = options.warm_recipe(), warm
        count = options.frozen_convolutions()
        frozen = freeze_leading_convolutions(model, count)
        report(0.0, f"custom_cnn: continuing {options.warm_start} for {recipe.epochs} epochs "
                    f"at a peak rate of {recipe.learning_rate:g}"
                    + (f", its first {count} convolutions frozen ({frozen} layers)" if frozen else ""))
    else:
        recipe = options.cnn_recipe()
        keras.utils.set_random_seed(component_seed(options.seed, "custom_cnn"))
        model = build_cnn(options.cnn_variant, options.image_size, len(split.classes))

    def on_epoch(epoch: int, total: int, logs: dict) -> None:
        report(epoch / total, f"custom_cnn epoch {epoch}/{total}: " + format_epoch_logs(logs))

    x_train, y_train = split.x_train, split.y_train
    if warm is not None and options.warm_start_replay is not None:
        rows = warm_training_rows(split.train_keys, bundle_hashes(options.warm_start, ("train",)), options.warm_start_replay,
                                  options.seed)
        report(0.0, f"custom_cnn: continuing on {rows.size} of {len(x_train)} training scans (those the warm-start "
                    f"bundle did not train on, and a replay sample of at most {options.warm_start_replay} it did)")
        x_train, y_train = x_train[rows], y_train[rows]
    history = train_cnn(model, x_train, y_train, split.x_val, split.y_val,
                        recipe, seed=options.seed, on_epoch=on_epoch)
    # Saved trainable again: freezing is this run's choice, not a property of the network a
    # later warm start continues.
    for layer in model.layers:
        layer.trainable = True
    return model, history, recipe, len(x_train)


def freeze_leading_convolutions(model, count: int) -> int:
    """Freeze every layer before `model`'s (count+1)-th Conv2D (so its first `count` convolutions,
    their BatchNorm and pooling); return how many layers were frozen. Frozen BatchNorm layers run
    in inference mode, and no gradient flows below the first trainable layer, which is what makes
    a warm start cheaper (README "Retraining in minutes")."""
    if count <= 0:
        return 0
    frozen = [layer for layer in model.layers[:_check_freeze(model, count)[count]] if layer.weights]
    for layer in frozen:
        layer.trainable = False
    return len(frozen)


def warm_training_rows(train_keys: list[str], trained_before: set[str], replay: int, seed: int) -> np.ndarray:
    """Row indices a warm-started CNN trains on: every row (key "sha256-frame") whose file is not in
    `trained_before`, plus a seeded sample of at most `replay` of those that are (so it keeps seeing
    what it learnt)."""
    seen = [key.rsplit("-", 1)[0] in trained_before for key in train_keys]
    new = [i for i, was in enumerate(seen) if not was]
    old = [i for i, was in enumerate(seen) if was]
    rng = np.random.default_rng(seed)
    kept = rng.choice(old, size=min(replay, len(old)), replace=False).tolist() if old and replay > 0 else []
    return np.array(sorted(new + kept), dtype=np.int64)
