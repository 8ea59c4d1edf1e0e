"""`python -m training train|evaluate|predict|explain|calibrate`: argument parsing, progress lines, summary tables."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from models import MODEL_NAMES

log = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The sub-commands and their options."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log library messages too")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train the models and write a bundle")
    train.add_argument("--data", required=True, help="labelled folder (one subfolder per class) or zip")
    train.add_argument("--out", required=True, help="bundle folder to write")
    train.add_argument("--models", default=",".join(MODEL_NAMES),
                       help="comma-separated subset of " + ",".join(MODEL_NAMES))
    train.add_argument("--epochs", type=_positive_int, default=40,
                       help="max epochs of the ResNet50/VGG16 heads (early stopping)")
    train.add_argument("--image-size", type=_positive_int, default=128)
    train.add_argument("--batch-size", type=_positive_int, default=32)
    train.add_argument("--backbone-weights", default="imagenet", help="imagenet | none | PATH")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--views", type=_non_negative_int, default=1,
                       help="augmented views per image in the backbone feature cache (0: clean images only)")
    train.add_argument("--cnn-variant", choices=("deep", "improved", "reference"), default="deep",
                       help="custom CNN: deep (default, best measured), improved, or the SPEC reference stack")
    train.add_argument("--cnn-epochs", type=_positive_int, default=None,
                       help="custom CNN epochs (default: the smaller of --epochs and 15)")
    train.add_argument("--cnn-lr", type=float, default=None, help="custom CNN peak learning rate")
    train.add_argument("--cnn-schedule", choices=("cosine", "plateau"), default=None)
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--test-part", choices=("on", "off"), default="on",
                       help="hold out the fixed evaluation split as an untouched test part, scored once at "
                            "the end into test_metrics.json beside a 1-NN baseline (default on)")
    train.add_argument("--near-copy-threshold", type=float, default=None, metavar="COSINE",
                       help="images whose 32 px grey thumbnails reach this cosine stay on one side of the "
                            "split (default 0.98; 0: only byte-identical files)")
    train.add_argument("--precision-check", choices=("on", "off"), default="on",
                       help="check on validation whether every network may serve in bfloat16 (ensemble labels "
                            "agreeing with float32 on >= 99.5%% of scans, no accuracy lost) and record it in the "
                            "manifest; the engine follows it (default on; skipped on CPUs without bfloat16)")
    train.add_argument("--bn-recalibration", choices=("on", "off"), default="off",
                       help="re-estimate ResNet50 BatchNorm statistics on training images before caching "
                            "(measured to hurt with random weights; off by default)")
    train.add_argument("--feature-cache", metavar="DIR", default=None,
                       help="keep backbone features in DIR across runs: a later run with the same backbone "
                            "weights and image size computes only new images (default: this run only)")
    train.add_argument("--feature-cache-max-mb", type=_non_negative_int, default=None,
                       help="bound of --feature-cache; least recently used entries go first (default 4096)")
    train.add_argument("--warm-start", metavar="BUNDLE", default=None,
                       help="continue BUNDLE's custom CNN for a few epochs at a low rate instead of training "
                            "it from scratch, and start the ResNet50/VGG16 heads from BUNDLE's where the "
                            "backbone is the same (same image size, CNN variant and classes)")
    train.add_argument("--warm-start-epochs", type=_positive_int, default=None,
                       help="epochs of a warm start (default 3)")
    train.add_argument("--warm-start-lr", type=float, default=None,
                       help="peak learning rate of a warm start (default: a tenth of the recipe's)")
    train.add_argument("--warm-start-replay", type=_non_negative_int, default=None, metavar="N",
                       help="a warm-started CNN trains on the scans BUNDLE did not train on plus at most N it did "
                            "(a seeded replay sample, e.g. 2000); default: the whole training side")
    train.add_argument("--warm-start-freeze", type=_non_negative_int, default=None, metavar="N",
                       help="a warm-started CNN keeps its first N convolutions as BUNDLE learnt them and trains "
                            "only the later layers (cheaper epochs); default: 3 for the deep variant, else 0")
    _review_target_option(train)

    evaluate = sub.add_parser("evaluate", help="score a bundle on a labelled folder")
    evaluate.add_argument("--models", required=True, help="bundle folder")
    evaluate.add_argument("--data", required=True, help="labelled folder or zip")
    evaluate.add_argument("--report", required=True, help="folder for metrics.json and plots")
    evaluate.add_argument("--batch-size", type=_positive_int, default=32)
    _precision_option(evaluate)

    predict = sub.add_parser("predict", help="classify scans (files or folders)")
    predict.add_argument("--models", required=True, help="bundle folder")
    predict.add_argument("paths", nargs="+", help="scan files or folders")
    predict.add_argument("--json", action="store_true", help="print one JSON document")
    predict.add_argument("--batch-size", type=_positive_int, default=32)
    _precision_option(predict)

    explain = sub.add_parser("explain", help="write Grad-CAM overlays (where each model looked) as PNG files")
    explain.add_argument("--models", required=True, help="bundle folder")
    explain.add_argument("paths", nargs="+", help="scan files or folders")
    explain.add_argument("--out", required=True, help="folder for the overlays: <file>[-frame<k>]-<model>.png")
    explain.add_argument("--model", action="append", choices=MODEL_NAMES, dest="model",
                         help="explain only this model (repeatable; default: every model of the bundle)")

    calibrate = sub.add_parser("calibrate", help="refit a bundle's temperatures and review threshold on its "
                                                 "validation items; write a new bundle")
    calibrate.add_argument("--models", required=True, help="bundle folder (with its dataset.tsv)")
    calibrate.add_argument("--data", required=True, help="the labelled folder or zip it was trained on")
    calibrate.add_argument("--out", required=True, help="new bundle folder to write")
    calibrate.add_argument("--batch-size", type=_positive_int, default=32)
    calibrate.add_argument("--test-part", choices=("on", "off"), default="on",
                           help="score the new bundle's test part again when the bundle held one out (default on)")
    _review_target_option(calibrate)
    return parser


def _review_target_option(parser: argparse.ArgumentParser) -> None:
    """--review-target-accuracy, defaulting to the service's REVIEW_TARGET_ACCURACY setting."""
    from training.calibration import DEFAULT_REVIEW_TARGET_ACCURACY

    raw = os.environ.get("REVIEW_TARGET_ACCURACY") or str(DEFAULT_REVIEW_TARGET_ACCURACY)
    try:
        default = float(raw)
    except ValueError:
        raise SystemExit(f"error: REVIEW_TARGET_ACCURACY must be a number, got {raw!r}") from None
    parser.add_argument("--review-target-accuracy", type=float, default=default, metavar="ACCURACY",
                        help="the review threshold is the lowest calibrated ensemble confidence whose accepted "
                             "validation scans reach this accuracy (default: REVIEW_TARGET_ACCURACY, else "
                             f"{DEFAULT_REVIEW_TARGET_ACCURACY}); now {default}")


def _precision_option(parser: argparse.ArgumentParser) -> None:
    """--precision, defaulting to the workers' own INFERENCE_PRECISION so figures are those served."""
    # Same environment setting and default as the workers (config/settings.py, README table).
    default = os.environ.get("INFERENCE_PRECISION", "auto")
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default=default,
                        help="engine precision as a worker would use it (default: INFERENCE_PRECISION, "
                             f"else auto: bfloat16 on bf16 hardware); now {default}")


class _ProgressPrinter:
    """Print progress lines; batch-level lines of one stage at most every few seconds."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        now = time.monotonic()
        # Epoch and result lines always show; feature-cache batches are throttled.
        chatty = "features:" in message or message.startswith("classified ")
        if chatty and now - self.last.get(stage, -1e9) < self.every_s:
            return
        self.last[stage] = now
        print(f"[{fraction * 100:5.1f}%] {message}", flush=True)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def metrics_table(models: dict) -> str:
    """Summary table: accuracy, macro F1, ROC AUC, ECE and Brier score per model."""
    rows = []
    for name, m in models.items():
        rows.append([name, f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", _share(m.get("roc_auc"), "-"),
                     _share(m.get("ece"), "-"), _share(m.get("brier"), "-")])
    return _table(rows, ["model", "accuracy", "macro_f1", "roc_auc", "ece", "brier"])


def triage_line(triage: dict | None) -> str:
    """One line on the review rule: coverage and the accuracy of accepted scans."""
    if not triage:
        return "review: this bundle sets no review threshold (train or calibrate it again)"
    threshold = triage.get("confidence_threshold")
    rule = (f"confidence >= {threshold:.4f}" if threshold is not None else "no threshold reached the target")
    return (f"review: {triage['accepted']} of {triage['images']} accepted ({triage['coverage']:.1%} coverage; "
            f"{rule}, >= {triage['min_agreement']} models agreeing), accuracy on accepted "
            f"{_share(triage['accepted_accuracy'])}, on the {triage['review']} sent to review "
            f"{_share(triage['review_accuracy'])}")


def cmd_train(args: argparse.Namespace) -> int:
    """Train and save a bundle; print per-epoch progress and a validation summary."""
    from training.recipe import (DEFAULT_FEATURE_CACHE_MAX_MB, DEFAULT_WARM_START_EPOCHS, DEFAULT_WARM_START_REPLAY,
                                 TrainOptions,
                                 train_bundle)

    options = TrainOptions(
        data=args.data, out=args.out,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
        backbone_weights=args.backbone_weights, seed=args.seed, views=args.views,
        cnn_variant=args.cnn_variant, cnn_epochs=args.cnn_epochs, cnn_learning_rate=args.cnn_lr,
        cnn_schedule=args.cnn_schedule, val_fraction=args.val_fraction,
        **({} if args.near_copy_threshold is None else {"near_copy_threshold": args.near_copy_threshold}),
        test_part=args.test_part == "on",
        bn_recalibration=args.bn_recalibration,
        precision_check=args.precision_check == "on",
        feature_cache=args.feature_cache,
        feature_cache_max_mb=(DEFAULT_FEATURE_CACHE_MAX_MB if args.feature_cache_max_mb is None
                              else args.feature_cache_max_mb),
        warm_start=args.warm_start,
        warm_start_epochs=args.warm_start_epochs or DEFAULT_WARM_START_EPOCHS,
        warm_start_lr=args.warm_start_lr,
        warm_start_replay=DEFAULT_WARM_START_REPLAY if args.warm_start_replay is None else args.warm_start_replay,
        warm_start_freeze=args.warm_start_freeze,  # None: the CNN variant's default
        review_target_accuracy=args.review_target_accuracy,
    )
    started = time.perf_counter()
    manifest = train_bundle(options, _ProgressPrinter())
    print()
    print(f"Validation metrics ({manifest['dataset']['validation']} images), "
          f"wall time {time.perf_counter() - started:.0f} s:")
    print(metrics_table(manifest["validation_metrics"]))
    print(f"ensemble weights ({manifest['ensemble_fit']['method']}): "
          + ", ".join(f"{k} {v:.3f}" for k, v in manifest["ensemble_weights"].items()))
    print("temperatures: " + ", ".join(f"{k} {v:.3f}" for k, v in manifest["calibration"]["temperatures"].items())
          + f", ensemble {manifest['calibration']['ensemble']['temperature']:.3f}")
    print(triage_line(manifest["triage"]["validation"]) + " (validation)")
    for arch, counts in (manifest.get("feature_cache") or {}).get("per_model", {}).items():
        if manifest["feature_cache"]["folder"]:
            print(f"{arch}: {counts['stored']} feature rows from {manifest['feature_cache']['folder']}, "
                  f"{counts['computed']} computed")
    if manifest.get("warm_start"):
        warm = manifest["warm_start"]
        print(f"custom_cnn: warm start from {warm['from']} ({warm['epochs']} epochs, peak lr {warm['learning_rate']:g})")
    for arch, detail in manifest.get("training", {}).items():
        if "speedup_vs_recompute_estimate" in detail:
            print(f"{arch}: feature cache {detail['feature_cache_seconds']:.0f} s + head "
                  f"{detail['head_seconds']:.0f} s; recomputing the backbone every epoch would take "
                  f"~{detail['recompute_every_epoch_estimate_seconds']:.0f} s (estimate) -> "
                  f"{detail['speedup_vs_recompute_estimate']:.1f}x")
    test = manifest.get("test_metrics")
    if test and "models" in test:
        near, far = test["with_near_copy_in_training"], test["without_near_copy_in_training"]
        print(f"Test part ({test['images']} images, never trained, validated or tuned on):")
        print(metrics_table(test["models"]))
        print(triage_line(test.get("triage")) + " (test part)")
        print(f"  of them {near['images']} have a training image at cosine >= {test['near_copy_cosine']} "
              f"(ensemble {_share(near['ensemble_accuracy'])}, 1-NN {_share(near['baseline_accuracy'])}), "
              f"{far['images']} do not (ensemble {_share(far['ensemble_accuracy'])}, "
              f"1-NN {_share(far['baseline_accuracy'])})")
    print(f"bundle: {args.out}")
    return 0


def _share(value: float | None, missing: str = "n/a") -> str:
    return missing if value is None else f"{value:.4f}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a bundle; print the summary table."""
    from training.evaluate import evaluate_bundle

    metrics = evaluate_bundle(args.models, args.data, args.report, _ProgressPrinter(), args.batch_size,
                              precision=args.precision)
    print(metrics_table(metrics["models"]))
    used = metrics["precision"]
    agreement = used["label_agreement_with_float32"]
    print(f"precision: {used['used']} (setting {used['setting']})" + (
        "; label agreement with float32: " + ", ".join(f"{n} {v:.4f}" for n, v in agreement.items())
        if agreement else ""))
    print("ECE without the bundle's temperatures: "
          + ", ".join(f"{n} {v['ece']:.4f}" for n, v in metrics["uncalibrated"].items())
          + f"; a perfectly calibrated ensemble would measure {metrics['calibration']['ensemble_ece_noise_floor']:.4f} "
            "on these scans")
    print(triage_line(metrics["triage"]))
    files = metrics["files"]
    print(f"files: {files['evaluated']} of {files['listed']} evaluated, {len(files['skipped'])} skipped")
    print(f"report: {Path(args.report) / 'metrics.json'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify files/folders; exit 1 only if nothing could be classified."""
    from training.predict import predict_paths, render_table

    result = predict_paths(args.models, args.paths, batch_size=args.batch_size, precision=args.precision)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render_table(result))
    return 0 if result["scans"] else 1


def cmd_explain(args: argparse.Namespace) -> int:
    """Write one Grad-CAM overlay per file and model; exit 1 only if none could be written."""
    from training.explain import explain_paths

    result = explain_paths(args.models, args.paths, args.out, args.model)
    for item in result["overlays"]:
        via = f" (via {item['via']})" if item["via"] else ""
        print(f"{item['overlay']}  {item['model']}{via}: {item['label']} {item['confidence']:.3f}")
    for error in result["errors"]:
        print(f"skipped {error['path']}: {error['error']}")
    print(f"{len(result['overlays'])} overlays in {args.out}, {len(result['errors'])} files skipped")
    return 0 if result["overlays"] else 1


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Refit calibration and the review threshold of a bundle into a new bundle; print before/after."""
    from training.recalibrate import REPORT_FILE, SUMMARY_HEADER, calibrate_bundle, summary_rows

    report = calibrate_bundle(args.models, args.data, args.out, args.review_target_accuracy,
                              batch_size=args.batch_size, test_part=args.test_part == "on",
                              progress=_ProgressPrinter())
    floors = [f"validation {report['validation']['ece_noise_floor']:.4f}"]
    if report["test"]:
        floors.append(f"test {report['test']['ece_noise_floor']:.4f}")
    print(f"validation: {report['validation']['images']} images; ECE of a perfectly calibrated ensemble on "
          f"these scans (noise): {', '.join(floors)}")
    print(_table(summary_rows(report), SUMMARY_HEADER))
    print(triage_line(report["triage"]["validation"]) + " (validation)")
    if report["test"]:
        print(triage_line(report["test"]["triage"]) + f" (test part, {report['test']['images']} images)")
    print(f"bundle: {args.out} (report: {Path(args.out) / REPORT_FILE})")
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input problem: message only, no traceback.

    Only the project's own error classes (and a missing file): a bare ValueError is as
    likely an internal bug, and its traceback must stay visible.
    """
    from models.backbones import BackboneWeightsError
    from models.bundle import BundleError
    from training.datasets import DatasetError
    from training.decode import DecodeError
    from training.evaluate import EvaluationError
    from training.recalibrate import CalibrationError
    from training.recipe import TrainingError

    return (BackboneWeightsError, BundleError, CalibrationError, DatasetError, DecodeError, EvaluationError,
            TrainingError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Keras/TF retracing notices are noise for a CLI user; real problems raise.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "explain": cmd_explain,
                "calibrate": cmd_calibrate}
    try:
        return commands[args.command](args)
    except _user_errors() as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
