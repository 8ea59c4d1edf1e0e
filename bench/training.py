"""Transfer-head training: feature cache vs recomputing the frozen backbone every epoch.

    python -m bench.training --data DIR [--image-size 224] [--epochs 15] [--views 1]
        [--models resnet50,vgg16] [--limit N] [--json]

On the same split, with the same backbone weights, head initialisation and recipe, each
architecture is trained twice for exactly --epochs epochs (early stopping off, so the
epoch counts match): once on the feature cache (training.features), once the plain way
(training.recompute). Both heads are then scored on the same validation features.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

ARCHES = ("resnet50", "vgg16")


def stratified_subset(items: list, limit: int, seed: int) -> list:
    """About `limit` items keeping each class's share: the validation side of the project's
    hash-grouped stratified split (training.datasets), sized limit / len(items)."""
    from training.datasets import stratified_hash_split

    if limit <= 0 or limit >= len(items):
        return items
    return stratified_hash_split(items, limit / len(items), seed)[1]


def _accuracy(head, features: np.ndarray, labels: np.ndarray) -> float:
    from training.heads import head_probabilities

    return float(np.mean(head_probabilities(head, features).argmax(1) == labels))


def compare_arch(arch: str, split, args: argparse.Namespace) -> dict:
    """Train one head both ways; return both times and validation accuracies."""
    import keras

    from models.architectures import build_backbone, build_head
    from models.backbones import BackboneWeights
    from training.features import build_feature_cache
    from training.heads import HeadRecipe, train_head
    from training.recompute import train_head_recomputing

    keras.utils.set_random_seed(args.seed)
    backbone = build_backbone(arch, args.image_size, BackboneWeights("none"))
    dim, classes = int(backbone.output_shape[-1]), len(split.classes)
    # patience = epochs: early stopping never ends a run, so both train the same epochs.
    recipe = HeadRecipe(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs)

    def on_epoch(way: str):
        return lambda epoch, total, logs: logger.info(
            "%s %s epoch %d/%d: val_acc %.4f (%.0f s)", arch, way, epoch, total,
            logs.get("val_accuracy", float("nan")), logs.get("seconds", 0.0))

    started = time.perf_counter()
    cache = build_feature_cache(backbone, arch, split.x_train, split.x_val, args.views, args.seed,
                                args.batch_size)
    train_x, train_y = cache.training_set(split.y_train)
    keras.utils.set_random_seed(args.seed)
    cached_head = build_head(arch, dim, classes)
    head_started = time.perf_counter()
    train_head(cached_head, train_x, train_y, cache.val, split.y_val, recipe, on_epoch("cached"))
    cached_seconds = time.perf_counter() - started
    head_seconds = time.perf_counter() - head_started

    keras.utils.set_random_seed(args.seed)
    plain_head = build_head(arch, dim, classes)
    plain = train_head_recomputing(backbone, plain_head, arch, split.x_train, split.y_train,
                                   split.x_val, split.y_val, recipe, args.seed, on_epoch("recompute"))
    # The backbone is frozen, so the cached validation features are exactly what the
    # recompute model computed: both heads are scored on the same inputs.
    cached_acc = _accuracy(cached_head, cache.val, split.y_val)
    plain_acc = _accuracy(plain_head, cache.val, split.y_val)
    return {
        "cached_seconds": round(cached_seconds, 1),
        "feature_cache_seconds": round(cache.seconds, 1),
        "head_seconds": round(head_seconds, 1),
        "recompute_seconds": round(plain.seconds, 1),
        "recompute_standardizer_seconds": round(plain.standardizer_seconds, 1),
        "speedup": round(plain.seconds / cached_seconds, 2),
        "cached_val_accuracy": round(cached_acc, 4),
        "recompute_val_accuracy": round(plain_acc, 4),
        "backbone_images_per_second": round(cache.images_per_second, 2),
    }


def run(args: argparse.Namespace) -> dict:
    """Load and split the data once, compare each architecture; return the result record."""
    import keras

    from training.datasets import list_labelled
    from training.recipe import TrainOptions, load_split

    arches = [a for a in args.models.split(",") if a]
    unknown = [a for a in arches if a not in ARCHES]
    if unknown or not arches:
        raise SystemExit(f"--models takes {', '.join(ARCHES)} (got {args.models!r})")
    options = TrainOptions(data=args.data, out="", image_size=args.image_size, seed=args.seed,
                           batch_size=args.batch_size, views=args.views, backbone_weights="none")
    items = stratified_subset(list_labelled(args.data), args.limit, args.seed)
    split = load_split(options, lambda fraction, message: logger.info("%s", message), items)
    models = {arch: compare_arch(arch, split, args) for arch in arches}
    cached = sum(m["cached_seconds"] for m in models.values())
    recompute = sum(m["recompute_seconds"] for m in models.values())
    return {
        "cached_seconds": round(cached, 1),
        "recompute_seconds": round(recompute, 1),
        "speedup": round(recompute / cached, 2),
        "accuracy_no_worse": all(m["cached_val_accuracy"] >= m["recompute_val_accuracy"] for m in models.values()),
        "models": models,
        "epochs": args.epochs,
        "views": args.views,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "train_images": int(len(split.x_train)),
        "val_images": int(len(split.x_val)),
        "files": len(items),
        "backbone_weights": "none",
        "keras_backend": keras.backend.backend(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="labelled folder or zip (one subfolder per class)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=15, help="head epochs, the same for both ways")
    parser.add_argument("--views", type=int, default=1, help="augmented views per image in the cache")
    parser.add_argument("--models", default=",".join(ARCHES), help="comma list of resnet50, vgg16")
    parser.add_argument("--limit", type=int, default=0, help="use at most N files, classes kept (0 = all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.epochs < 1 or args.views < 0 or args.image_size < 32:
        raise SystemExit("--epochs must be >= 1, --views >= 0 and --image-size >= 32")
    # Progress goes to stderr even with --json: a full run takes an hour.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    # Run as a script (python bench/training.py), the repository root is not on sys.path.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
