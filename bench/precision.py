"""Every network in reduced precision, measured against float32 in one run: the engine's bfloat16
(the default networks, and ResNet50 too) and int8 post-training quantisation (TensorFlow Lite with
XNNPACK, calibrated on training scans), on scans the bundle never trained on.

    python -m bench.precision --bundle BUNDLE [--data ../shared/data/brain-mri/Training]
        [--scans 512] [--batch-size 32] [--calibration-scans 64] [--repeats 2] [--json]

For each variant: scans/s over the same decoded scans (whole five-model step: networks, SVM/RF,
calibrated ensemble; best of --repeats), the ensemble-label agreement with float32 and each model's,
and the ensemble's accuracy on the scans' folder labels. Scans are the folder's files whose content
the bundle did not train or validate on (dataset.tsv), taken class by class.

int8 runs the same BatchNorm-folded networks the engine serves, converted by the TFLite converter
(`Optimize.DEFAULT`, int8 builtins, float input and output) with a representative set of the
bundle's own training scans; TFLite float32 (the same networks through XNNPACK, not quantised) is
measured beside it so the gain of int8 itself is visible. TensorFlow only: Keras 3's own
`Model.quantize("int8")` covers Dense/EinsumDense layers, not the convolutions that hold 99% of
these networks' FLOPs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(REPO))

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.precision", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="a trained bundle folder (with dataset.tsv)")
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/brain-mri/Training"),
                        help="labelled folder the scans are taken from")
    parser.add_argument("--scans", type=int, default=512, help="unseen scans to classify (at least 500 for the issue)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--calibration-scans", type=int, default=64, help="training scans for int8 calibration")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds per variant; the best is reported")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="TFLite interpreter threads")
    parser.add_argument("--skip-int8", action="store_true", help="bfloat16 only (no TFLite conversion)")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    if args.scans < 1 or args.batch_size < 1 or args.calibration_scans < 1 or args.repeats < 1:
        parser.error("--scans, --batch-size, --calibration-scans and --repeats must be positive")
    return args


def split_scans(bundle: Path, data: str, scans: int, calibration: int, seed: int = 0) -> tuple[list, list]:
    """(unseen items, training items): folder items the bundle never trained or validated on,
    class by class up to `scans`, and up to `calibration` of its own training items."""
    from bench.training import stratified_subset
    from training.datasets import list_labelled
    from training.recipe import bundle_hashes

    learned, trained = bundle_hashes(bundle, ("train", "validation")), bundle_hashes(bundle, ("train",))
    unique = list({item.sha256: item for item in list_labelled(data)}.values())
    unseen = [item for item in unique if item.sha256 not in learned]
    own = [item for item in unique if item.sha256 in trained]
    return (stratified_subset(unseen, min(scans, len(unseen)), seed),
            stratified_subset(own, min(calibration, len(own)), seed))


def decode(items: Sequence[Any], image_size: int) -> np.ndarray:
    """uint8 [N,S,S,3] through the one decode and resampling chain."""
    from bench.inference import load_scan

    return np.stack([load_scan(Path(item.source), image_size) for item in items])


class LiteNetworks:
    """The engine's networks as TensorFlow Lite interpreters (float32 or int8), same preprocessing."""

    def __init__(self, engine: Any, representative: np.ndarray, quantise: bool, threads: int, folder: Path) -> None:
        """Convert each of `engine`'s folded float32 networks; int8 is calibrated on `representative`."""
        import keras

        from models.architectures import FEATURES_LAYER

        self.engine, self.interpreters, self.convert_seconds = engine, {}, {}
        for name, model in engine.networks.items():
            if name == "resnet50":  # head probabilities and the SVM/RF features from one pass
                model = keras.Model(model.inputs, [model.outputs[0], model.get_layer(FEATURES_LAYER).output])
            started = time.perf_counter()
            self.interpreters[name] = self._convert(model, self._inputs(name, representative), quantise, threads,
                                                    folder / f"{name}-{'int8' if quantise else 'fp32'}")
            self.convert_seconds[name] = round(time.perf_counter() - started, 1)
        self._batch = 0

    @staticmethod
    def _inputs(name: str, batch_uint8: np.ndarray) -> np.ndarray:
        from models.preprocess import preprocess_for

        return np.asarray(preprocess_for(name, batch_uint8), dtype=np.float32)

    @staticmethod
    def _convert(model: Any, representative: np.ndarray, quantise: bool, threads: int, folder: Path) -> Any:
        import tensorflow as tf

        model.export(str(folder), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(folder))
        if quantise:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None]] for image in representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
        return tf.lite.Interpreter(model_content=converter.convert(), num_threads=threads)

    def _run(self, name: str, inputs: np.ndarray) -> list[np.ndarray]:
        interpreter = self.interpreters[name]
        detail = interpreter.get_input_details()[0]
        if tuple(detail["shape"]) != inputs.shape:
            interpreter.resize_tensor_input(detail["index"], inputs.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], inputs)
        interpreter.invoke()
        return [interpreter.get_tensor(out["index"]) for out in interpreter.get_output_details()]

    def member_probabilities(self, batch_uint8: np.ndarray) -> dict[str, np.ndarray]:
        """What InferenceEngine.member_probabilities returns, from the interpreters."""
        from models import ESTIMATOR_NAMES

        probs: dict[str, np.ndarray] = {}
        classes = len(self.engine.classes)
        for name in self.interpreters:
            outputs = self._run(name, self._inputs(name, batch_uint8))
            if name == "resnet50":
                # Outputs are found by width: the head's is the class count, the features' is not.
                head = next(o for o in outputs if o.shape[-1] == classes)
                features = next(o for o in outputs if o is not head)
                probs[name] = head
                for estimator in ESTIMATOR_NAMES:
                    if estimator in self.engine.estimators:
                        probs[estimator] = self.engine.estimator_probabilities(estimator, features)
            else:
                probs[name] = outputs[0]
        return probs


def classify(member_probabilities: Callable[[np.ndarray], dict], engine: Any, images: np.ndarray,
             batch_size: int) -> tuple[dict[str, np.ndarray], float]:
    """({model: labels}, seconds) for every image, batch by batch, calibrated ensemble included."""
    labels: dict[str, list[np.ndarray]] = {}
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        probs = engine.calibrated(member_probabilities(images[start:start + batch_size]))
        for name, p in probs.items():
            labels.setdefault(name, []).append(np.argmax(p, axis=1))
    return {n: np.concatenate(v) for n, v in labels.items()}, time.perf_counter() - started


def measure(name: str, member_probabilities: Callable, engine: Any, images: np.ndarray, batch_size: int,
            repeats: int) -> tuple[dict[str, np.ndarray], float]:
    """(labels, best scans/s) of `repeats` timed passes after a warm-up batch."""
    member_probabilities(images[:batch_size])
    best, labels = 0.0, {}
    for _ in range(repeats):
        labels, seconds = classify(member_probabilities, engine, images, batch_size)
        best = max(best, len(images) / seconds)
    logger.info("%s: %.2f scans/s", name, best)
    return labels, best


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every variant on the same scans; rates, agreement with float32 and accuracy."""
    import keras

    from models.bundle import load_bundle
    from models.engine import DEFAULT_BF16_NETWORKS, InferenceEngine
    from models.precision import bfloat16_supported as bf16_supported

    bundle_dir = Path(args.bundle)
    bundle = load_bundle(bundle_dir)
    unseen, own = split_scans(bundle_dir, args.data, args.scans, args.calibration_scans)
    images, calibration = decode(unseen, bundle.image_size), decode(own, bundle.image_size)
    truth = np.array([bundle.classes.index(item.label) for item in unseen])
    fp32 = InferenceEngine(bundle, "float32", args.batch_size)
    variants: dict[str, tuple[Callable, Any]] = {"float32": (fp32.member_probabilities, fp32)}
    if bf16_supported():
        # Named, not the bundle's own choice: a bundle whose check let every network in would
        # otherwise be measured twice under two names.
        default = InferenceEngine(bundle, "bfloat16", args.batch_size, bf16_networks=DEFAULT_BF16_NETWORKS)
        every = InferenceEngine(bundle, "bfloat16", args.batch_size, bf16_networks=tuple(bundle.networks))
        variants["bfloat16 (VGG16, CNN)"] = (default.member_probabilities, default)
        variants["bfloat16 (every network)"] = (every.member_probabilities, every)
    converted: dict[str, dict] = {}
    if not args.skip_int8:
        with tempfile.TemporaryDirectory(prefix="bench-precision-") as folder:
            for label, quantise in (("tflite float32", False), ("tflite int8", True)):
                lite = LiteNetworks(fp32, calibration, quantise, args.threads, Path(folder))
                variants[label] = (lite.member_probabilities, fp32)
                converted[label] = lite.convert_seconds
    results: dict[str, Any] = {}
    reference: dict[str, np.ndarray] = {}
    for label, (member_probabilities, engine) in variants.items():
        labels, rate = measure(label, member_probabilities, engine, images, args.batch_size, args.repeats)
        reference = reference or labels
        results[label] = {
            "scans_per_s": round(rate, 3),
            "ensemble_agreement": round(float(np.mean(labels["ensemble"] == reference["ensemble"])), 4),
            "ensemble_flips": int(np.sum(labels["ensemble"] != reference["ensemble"])),
            "model_agreement": {n: round(float(np.mean(labels[n] == reference[n])), 4) for n in labels},
            "ensemble_accuracy": round(float(np.mean(labels["ensemble"] == truth)), 4),
            **({"convert_seconds": converted[label]} if label in converted else
               {"bfloat16_networks": sorted(n for n, kind in engine.network_precision.items() if kind == "bfloat16")}),
        }
    base = results["float32"]["scans_per_s"]
    for record in results.values():
        record["speed_vs_float32"] = round(record["scans_per_s"] / base, 3)
    return {"bundle": str(bundle_dir), "image_size": bundle.image_size, "scans": len(images),
            "calibration_scans": len(calibration), "batch_size": args.batch_size, "variants": results,
            "bf16_supported": bf16_supported(), "keras_backend": keras.backend.backend(),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def table(result: dict[str, Any]) -> str:
    """The variants side by side."""
    lines = [f"{result['scans']} unseen scans at {result['image_size']} px, batch {result['batch_size']}, "
             f"{result['machine']}, load average {result['load_average'][0]}",
             f"{'variant':26} {'scans/s':>8} {'vs fp32':>8} {'ensemble agreement':>19} {'flips':>6} {'accuracy':>9}"]
    for label, r in result["variants"].items():
        lines.append(f"{label:26} {r['scans_per_s']:8.2f} {r['speed_vs_float32']:7.2f}x "
                     f"{r['ensemble_agreement']:19.4f} {r['ensemble_flips']:6d} {r['ensemble_accuracy']:9.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    result = run(args)
    print(json.dumps(result) if args.json else table(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
