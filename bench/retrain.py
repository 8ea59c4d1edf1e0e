"""A retrain after +N reviewed scans, cold against warm, on the same data, in one run.

    python -m bench.retrain --data ../shared/data/brain-mri/Training [--scans 1200] [--added 200]
        [--image-size 128] [--epochs 40] [--cnn-epochs 15] [--views 1] [--warm-epochs 3] [--json]

Steps, all through training.recipe.train_bundle with the fixed evaluation split held out
(training.pool), backbone weights `none`:

1. `--scans` labelled files (classes kept; 0 = the whole folder) less `--added` of them train the
   *previous* version, filling a persistent feature cache (as the service's runs do).
2. The `--added` files join as reviewed scans (their folder labels confirmed). On that pool:
   - **warm**: the feature cache of step 1 and a warm start of the previous custom CNN;
   - **cold**: what a retrain did before: every backbone feature computed, the CNN from scratch.
3. Each bundle is scored like the gate does, through the inference engine on the same evaluation
   scans (ensemble accuracy and macro-F1); a run's gate time is its candidate's scoring plus the
   previous version's.

Prints a table with both wall times (training alone, and with the gate's scoring), both
evaluation figures and the cold/warm ratio; --json prints one JSON line instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.retrain", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/brain-mri/Training"),
                        help="labelled folder or zip (one subfolder per class)")
    parser.add_argument("--scans", "--limit", dest="scans", type=int, default=1200,
                        help="labelled files to use, classes kept (0 = all); the default fits ~25 min on 2 cores")
    parser.add_argument("--added", type=int, default=200, help="of those, files that join as reviewed scans")
    parser.add_argument("--models", default="", help="comma-separated subset of the five models (default: all)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=40, help="head epochs (early stopping), the recipe's default")
    parser.add_argument("--cnn-epochs", type=int, default=None, help="cold CNN epochs (default: the recipe's, 15)")
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--warm-epochs", type=int, default=None, help="warm-start CNN epochs (default: the recipe's)")
    parser.add_argument("--warm-replay", type=int, default=None,
                        help="the warm CNN trains on the added scans plus at most this many the previous version "
                             "trained on (default: the recipe's)")
    parser.add_argument("--warm-freeze", type=int, default=None,
                        help="the warm CNN keeps its first N convolutions frozen (default: the recipe's)")
    parser.add_argument("--reuse-previous", action="store_true",
                        help="with --out: keep OUT/previous and its feature cache when an earlier run of the same "
                             "data left them (the previous version is not timed then)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None, help="folder for the bundles and the cache (default: a temp folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    if args.added < 1 or args.scans < 0 or (args.scans and args.added >= args.scans):
        parser.error("--added must be at least 1 and below --scans")
    return args


def choose(items: list, scans: int, added: int, seed: int) -> tuple[list, list]:
    """(folder items, reviewed items): a class-keeping subset of `scans`, `added` of them held back
    as reviewed scans (one item per content, so no reviewed scan is also a folder file)."""
    from bench.training import stratified_subset

    unique = list({item.sha256: item for item in items}.values())
    subset = stratified_subset(unique, scans, seed)
    reviewed = set(random.Random(seed).sample(range(len(subset)), added))
    return ([item for i, item in enumerate(subset) if i not in reviewed],
            [item for i, item in enumerate(subset) if i in reviewed])


def _options(args: argparse.Namespace, out: Path, **extra):
    from models import MODEL_NAMES
    from training.recipe import DEFAULT_WARM_START_EPOCHS, TrainOptions

    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) or MODEL_NAMES
    return TrainOptions(data=args.data, out=out, models=models, image_size=args.image_size, epochs=args.epochs,
                        cnn_epochs=args.cnn_epochs, views=args.views, batch_size=args.batch_size,
                        backbone_weights="none", seed=args.seed, val_fraction=args.val_fraction,
                        warm_start_epochs=args.warm_epochs or DEFAULT_WARM_START_EPOCHS, **extra)


def _train(name: str, options, items: list, held_out: list) -> dict:
    from training.recipe import train_bundle

    def progress(stage: str, fraction: float, message: str) -> None:
        if "features:" not in message:  # batch lines are noise here
            logger.info("%s [%s %3.0f%%] %s", name, stage, fraction * 100, message)

    started, cpu = time.perf_counter(), time.process_time()
    # As the service's runs do: near copies of evaluation scans are dropped from training.
    manifest = train_bundle(options, progress, items=items, evaluation_held_out=True, held_out=held_out)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    computed = sum(m["computed"] for m in manifest["feature_cache"]["per_model"].values())
    logger.info("%s trained in %.0f s (%d backbone feature rows computed)", name, seconds, computed)
    return {"seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "features_computed": computed,
            "features_stored": sum(m["stored"] for m in manifest["feature_cache"]["per_model"].values()),
            "timings": manifest["timings"], "train": manifest["dataset"]["train"],
            "validation": manifest["dataset"]["validation"], "cnn_epochs": manifest["epochs"]["custom_cnn"]}


def _reused(bundle: Path, train: list) -> dict | None:
    """The record of an earlier run's previous version when it trained on exactly `train`'s files."""
    from training.datasets import dataset_fingerprint

    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("training_data_sha256") != dataset_fingerprint(train):
        logger.info("%s trained on other files: training the previous version again", bundle)
        return None
    logger.info("reusing %s and its feature cache (not timed)", bundle)
    return {"seconds": None, "cpu_seconds": None, "features_computed": None, "reused": str(bundle),
            "timings": manifest["timings"], "train": manifest["dataset"]["train"],
            "validation": manifest["dataset"]["validation"], "cnn_epochs": manifest["epochs"]["custom_cnn"]}


def _score(bundle: Path, evaluation: list) -> dict:
    """Ensemble figures of one bundle on the evaluation items through the inference engine, timed."""
    from training.evaluate import score_bundles

    started, cpu = time.perf_counter(), time.process_time()
    scored = score_bundles({"bundle": bundle}, evaluation)["bundle"]
    ensemble = scored["models"]["ensemble"]
    return {"seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
            "accuracy": round(ensemble["accuracy"], 4),
            "macro_f1": round(ensemble["macro_f1"], 4), "size": scored["size"]}


def run(args: argparse.Namespace, out: Path) -> dict:
    """Train previous, warm and cold; score both candidates; return the record."""
    import keras

    from training.datasets import list_labelled
    from training.pool import build_pool

    folder, reviewed = choose(list_labelled(args.data), args.scans, args.added, args.seed)
    before, after = build_pool(folder, []), build_pool(folder, reviewed)
    cache = out / "feature-cache"
    logger.info("previous version: %d folder files (%d to train on, %d held out for evaluation)",
                len(folder), len(before.train), len(before.evaluation))
    previous = (_reused(out / "previous", before.train) if args.reuse_previous else None) or \
        _train("previous", _options(args, out / "previous", feature_cache=cache), before.train, before.evaluation)
    logger.info("+%d reviewed scans: %d to train on, %d evaluation scans", len(reviewed), len(after.train),
                len(after.evaluation))
    # Without the custom CNN (a subset in --models) only the feature cache makes the difference.
    continued = out / "previous" if "custom_cnn" in _options(args, out).models else None
    # Only the warm options asked for; the rest stay the recipe's.
    warm_options = {key: value for key, value in (("warm_start_replay", args.warm_replay),
                                                  ("warm_start_freeze", args.warm_freeze)) if value is not None}
    warm = _train("warm", _options(args, out / "warm", feature_cache=cache, warm_start=continued, **warm_options),
                  after.train, after.evaluation)
    cold = _train("cold", _options(args, out / "cold"), after.train, after.evaluation)
    # The gate scores the candidate and re-scores the active (here: previous) version on the
    # same evaluation scans; each bundle is scored once and the gate's time is the two together.
    scores = {name: _score(out / name, after.evaluation) for name in ("previous", "warm", "cold")}
    for name, record in (("warm", warm), ("cold", cold)):
        gate_seconds = scores[name]["seconds"] + scores["previous"]["seconds"]
        record["gate"] = {"seconds": round(gate_seconds, 1), "candidate": scores[name], "previous": scores["previous"]}
        record["with_gate_seconds"] = round(record["seconds"] + gate_seconds, 1)
    return {
        "previous": previous, "warm": warm, "cold": cold,
        "speedup": round(cold["seconds"] / warm["seconds"], 2),
        # Process CPU time (all threads): steadier than wall time when other work shares the CPU.
        "cpu_speedup": round(cold["cpu_seconds"] / warm["cpu_seconds"], 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "speedup_with_gate": round(cold["with_gate_seconds"] / warm["with_gate_seconds"], 2),
        "folder_files": len(folder), "reviewed_added": len(reviewed), "evaluation_scans": len(after.evaluation),
        "image_size": args.image_size, "views": args.views, "epochs": args.epochs, "warm_replay": args.warm_replay,
        "warm_freeze": args.warm_freeze,
        "backbone_weights": "none", "keras_backend": keras.backend.backend(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }


def table(result: dict) -> str:
    """The measured runs side by side, and the ratio."""
    rows = [("run", "train s", "train CPU s", "with gate s", "features computed", "CNN epochs", "eval accuracy",
             "eval macro-F1")]
    for name in ("cold", "warm"):
        r = result[name]
        rows.append((name, f"{r['seconds']:.0f}", f"{r['cpu_seconds']:.0f}", f"{r['with_gate_seconds']:.0f}",
                     str(r["features_computed"]),
                     str(r["cnn_epochs"]), f"{r['gate']['candidate']['accuracy']:.4f}",
                     f"{r['gate']['candidate']['macro_f1']:.4f}"))
    previous = result["cold"]["gate"]["previous"]
    before = result["previous"]
    reused = before["seconds"] is None  # --reuse-previous: trained by an earlier run, not timed here
    rows.append(("previous", "reused" if reused else f"{before['seconds']:.0f}",
                 "-" if reused else f"{before['cpu_seconds']:.0f}", "-",
                 "-" if reused else str(before["features_computed"]),
                 str(before["cnn_epochs"]), f"{previous['accuracy']:.4f}", f"{previous['macro_f1']:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"cold / warm: {result['speedup']:.2f}x training ({result['cpu_speedup']:.2f}x in CPU time), "
                 f"{result['speedup_with_gate']:.2f}x with the gate; load average {result['load_average'][0]:.1f}; "
                 f"{result['folder_files']} folder files + {result['reviewed_added']} reviewed, "
                 f"{result['evaluation_scans']} evaluation scans, {result['image_size']} px, {result['machine']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # The recipe's own stage lines repeat what _train logs with the run's name.
    logging.getLogger("training.progress").setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result = run(args, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-retrain-") as folder:
            result = run(args, Path(folder))
    print(json.dumps(result) if args.json else table(result), flush=True)
    return 0


if __name__ == "__main__":
    # Run as a script (python bench/retrain.py), the repository root is not on sys.path.
    sys.path.insert(0, str(REPO))
    sys.exit(main())
