"""The training recipe: labelled folder/zip in, verified five-model bundle out (train_bundle)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models import ESTIMATOR_NAMES, MODEL_NAMES
from training.cnn import CnnSchedule
from training.cnn_variants import CNN_VARIANTS
from training.datasets import list_labelled
from training.pool import EVALUATION_RULE
from training.progress import ProgressFn, StagedProgress, format_epoch_logs

log = logging.getLogger(__name__)

TRANSFER_ARCHES = ("resnet50", "vgg16")
# Beside manifest.json: what the bundle was trained and validated on, one line per item.
DATASET_LIST = "dataset.tsv"
# Forward GFLOP per 224 px image (multiply-add = 2); used only to weigh progress stages.
_GFLOP_224 = {"resnet50": 7.7, "vgg16": 30.7, "custom_cnn": 1.3}


# The cosine schedule is planned over this many epochs unless --cnn-epochs says otherwise:
# on the shared folder the deep CNN reached 96% validation accuracy in 15 (96 px).
DEFAULT_CNN_EPOCHS = 15


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
    # "on" re-estimates BatchNorm statistics of a random ResNet50 before caching; measured
    # harmful (96 px, 1,500 images: 57% vs 85% validation accuracy), so off by default.
    bn_recalibration: str = "off"
    workers: int | None = None  # decode threads

    def cnn_recipe(self) -> CnnSchedule:
        """The custom CNN schedule: SPEC.md's for 'reference', warmup+cosine for 'improved'."""
        reference = self.cnn_variant == "reference"
        schedule = self.cnn_schedule or ("plateau" if reference else "cosine")
        return CnnSchedule(
            epochs=self.cnn_epochs or min(self.epochs, DEFAULT_CNN_EPOCHS),
            batch_size=self.batch_size,
            learning_rate=self.cnn_learning_rate or (1e-4 if schedule == "plateau" else 2e-3),
            schedule=schedule,
            label_smoothing=0.0 if schedule == "plateau" else 0.1,
            weight_decay=0.0 if schedule == "plateau" else 5e-4,
        )


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
    if not 0.0 < options.val_fraction < 0.5:
        raise TrainingError("--val-fraction must be between 0 and 0.5")
    if options.cnn_variant not in CNN_VARIANTS:
        raise TrainingError(f"--cnn-variant must be one of {', '.join(CNN_VARIANTS)}")
    if options.bn_recalibration not in ("on", "off"):
        raise TrainingError("--bn-recalibration must be on or off")
    if not Path(options.data).exists():
        raise TrainingError(f"training data not found: {options.data}")


def load_split(options: TrainOptions, report, items: list | None = None) -> _Split:
    """List (or take `items`), split by content hash and class, encode and decode the images."""
    from training.datasets import (
        dataset_fingerprint, fit_label_encoder, list_labelled, load_image_array, stratified_hash_split,
    )

    items = list_labelled(options.data) if items is None else items
    classes_found = sorted({item.label for item in items})
    if len(classes_found) < 2:
        raise TrainingError(f"need at least two class folders with images in {options.data}, "
                            f"found {classes_found or 'none'}")
    train_items, val_items = stratified_hash_split(items, options.val_fraction, options.seed)
    if not val_items or not train_items:
        raise TrainingError(f"{len(items)} images are too few for a train/validation split")
    encoder = fit_label_encoder(item.label for item in items)
    report(0.1, f"{len(items)} images in {len(classes_found)} classes: "
                f"{len(train_items)} train / {len(val_items)} validation")

    def load(subset, name):
        x, kept = load_image_array(subset, options.image_size, options.workers, on_error="skip")
        skipped = len(subset) - len(set(kept))
        if skipped:
            log.warning("%d %s files could not be decoded and were skipped", skipped, name)
        y = encoder.transform([subset[i].label for i in kept]).astype(np.int32)
        return x, y, skipped

    x_train, y_train, skipped_train = load(train_items, "training")
    report(0.85, f"decoded {len(x_train)} training images at {options.image_size} px")
    x_val, y_val, skipped_val = load(val_items, "validation")
    if len(x_train) == 0 or len(x_val) == 0:
        raise TrainingError("no decodable images left on one side of the split")
    report(1.0, f"decoded {len(x_val)} validation images")
    listing = [(i.sha256, i.frame, i.label, side) for side, subset in (("train", train_items),
                                                                       ("validation", val_items))
               for i in subset]
    return _Split(
        x_train, y_train, x_val, y_val,
        classes=[str(c) for c in encoder.classes_],
        encoder=encoder,
        fingerprint=dataset_fingerprint(items),
        counts={"files": len(items), "train": int(len(x_train)), "validation": int(len(x_val)),
                "skipped_undecodable": skipped_train + skipped_val},
        listing=listing,
    )


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
        costs["custom_cnn"] = options.cnn_recipe().epochs * n_train * 3 * _GFLOP_224["custom_cnn"] * scale
    costs["ensemble"] = 0.01 * n_val
    costs["save"] = 0.05 * n_val
    return costs


def train_bundle(options: TrainOptions, progress: ProgressFn | None = None, items: list | None = None,
                 evaluation_held_out: bool = False) -> dict:
    """Train the selected models, fit ensemble weights on validation, save and return the manifest.

    `items` (LabelledImage) replaces listing `options.data` (a run's pool of folder files and
    reviewed scans). With `evaluation_held_out` the items must hold nothing of the fixed
    evaluation split (training.pool); the bundle records that, and lists what it trained on
    in dataset.tsv.
    """
    import keras

    from models.backbones import resolve_backbone_weights
    from models.bundle import save_bundle
    from training.ensemble import agreement_counts, combine, fit_ensemble_weights
    from training.metrics import classification_metrics
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

    if evaluation_held_out:
        from training.pool import check_disjoint

        check_disjoint(items if items is not None else list_labelled(options.data))
    prelim = StagedProgress({"load": 1.0}, progress)
    t0 = time.perf_counter()
    split = load_split(options, prelim.stage("load"), items)
    timings["load"] = time.perf_counter() - t0
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
                                      keep_features=(arch == "resnet50"))
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
        model, history, recipe = _train_custom_cnn(split, options, staged.stage("custom_cnn"))
        networks["custom_cnn"] = model
        histories["custom_cnn"] = history
        val_probs["custom_cnn"] = np.asarray(
            model.predict(split.x_val.astype(np.float32) / 255.0, batch_size=64, verbose=0))
        details["custom_cnn"] = {"variant": options.cnn_variant, "recipe": asdict(recipe),
                                 "epochs_run": len(history.get("loss", []))}
        timings["custom_cnn"] = time.perf_counter() - t0

    staged("ensemble", 0.0, "fitting ensemble weights on validation")
    ordered = {m: val_probs[m] for m in models}
    fit = fit_ensemble_weights(ordered, split.y_val)
    ensemble_probs = combine(ordered, fit.weights)
    metrics = {m: classification_metrics(split.y_val, p, split.classes) for m, p in ordered.items()}
    metrics["ensemble"] = classification_metrics(split.y_val, ensemble_probs, split.classes)
    agreement = agreement_counts(ordered, ensemble_probs)
    staged("ensemble", 1.0, f"ensemble ({fit.method}) validation accuracy {fit.accuracy:.4f}")

    timings["total_before_save"] = time.perf_counter() - started
    manifest = {
        "classes": split.classes,
        "image_size": options.image_size,
        "backbone_weights": _weights_manifest(options.backbone_weights, weights),
        "custom_cnn_variant": options.cnn_variant if "custom_cnn" in models else None,
        "training_data_sha256": split.fingerprint,
        "validation_metrics": metrics,
        "ensemble_weights": fit.weights,
        "ensemble_fit": {"method": fit.method, "validation_accuracy": fit.accuracy,
                         "best_member": fit.best_member,
                         "best_member_accuracy": fit.best_member_accuracy,
                         "agreement_histogram": {str(k): int(np.sum(agreement == k))
                                                 for k in range(len(models) + 1)}},
        "epochs": {"heads": options.epochs, "custom_cnn": options.cnn_recipe().epochs},
        "seed": options.seed,
        "views": options.views,
        "val_fraction": options.val_fraction,
        "dataset": split.counts,
        "evaluation_split": {"rule": EVALUATION_RULE, "held_out": evaluation_held_out},
        "training": details,
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    staged("save", 0.0, f"saving bundle to {options.out}")
    saved = save_bundle(options.out, networks=networks, estimators=estimators,
                        label_encoder=split.encoder, manifest=manifest)
    write_dataset_list(Path(options.out) / DATASET_LIST, split.listing)
    plot_dir = Path(options.out) / "plots"
    plot_dir.mkdir(exist_ok=True)
    plot_training_history(histories, plot_dir / "training_history.png")
    staged("save", 1.0, f"bundle saved in {time.perf_counter() - started:.0f} s")
    return saved


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


def _weights_manifest(spec: str, weights: dict) -> dict:
    """{mode, path, sha256} of the first backbone, plus every backbone's own entry."""
    if not weights:
        return {"mode": None, "path": None, "sha256": None, "per_model": {}, "requested": spec}
    first = next(iter(weights.values())).to_manifest()
    return {**first, "per_model": {a: w.to_manifest() for a, w in weights.items()}, "requested": spec}


def _train_custom_cnn(split: _Split, options: TrainOptions, report):
    """Build and train the custom CNN; report every epoch."""
    from training.cnn import train_cnn
    from training.cnn_variants import build_cnn

    recipe = options.cnn_recipe()
    model = build_cnn(options.cnn_variant, options.image_size, len(split.classes))

    def on_epoch(epoch: int, total: int, logs: dict) -> None:
        report(epoch / total, f"custom_cnn epoch {epoch}/{total}: " + format_epoch_logs(logs))

    history = train_cnn(model, split.x_train, split.y_train, split.x_val, split.y_val,
                        recipe, seed=options.seed, on_epoch=on_epoch)
    return model, history, recipe
