"""Five-model inference benchmark: naive vs batched fp32 vs batched bf16, against the GEMM limit.

    python -m bench.inference --data DIR [--batch-size 32] [--scans 64]
        [--bundle DIR | --backbone-weights none] [--image-size 128] [--json]

The image size is the bundle's own with --bundle, else --image-size, else the default
training recipe's (128 px, what the service's first model is trained at); the record
says which (`image_size`, `image_size_source`). 224 px (the reference's) is an option.
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



def pick_scans(data: Path, count: int) -> list[tuple[Path, str]]:
    """Return up to `count` (path, class) pairs, taken round-robin over the class folders."""
    from training.datasets import is_scan_name

    classes = sorted(d for d in data.iterdir() if d.is_dir())
    if not classes:
        raise SystemExit(f"{data} has no class subfolders")
    per_class = [sorted(p for p in c.rglob("*") if p.is_file() and is_scan_name(p.name)) for c in classes]
    picked: list[tuple[Path, str]] = []
    for i in range(max(len(files) for files in per_class)):
        for cls, files in zip(classes, per_class):
            if i < len(files) and len(picked) < count:
                picked.append((files[i], cls.name))
    return picked


def load_scan(path: Path, image_size: int) -> np.ndarray:
    """Decode one file and resize it to the model input (the one resampling chain)."""
    from models.preprocess import resize_image
    from training.decode import decode_file

    return resize_image(decode_file(path, target_size=image_size)[0].image, image_size)


def count_flops(model) -> int:
    """FLOPs of one forward pass for one image (multiply-add = 2), from Conv2D/Dense layer shapes."""
    total = 0
    for layer in model.layers:
        kind = layer.__class__.__name__
        if hasattr(layer, "layers"):
            total += count_flops(layer)
        elif kind in ("Conv2D", "Dense"):
            out = layer.output.shape
            positions = int(np.prod([d for d in out[1:-1]])) if len(out) > 2 else 1
            total += 2 * positions * int(np.prod(layer.kernel.shape))
        elif kind == "DepthwiseConv2D":
            out = layer.output.shape
            total += 2 * int(np.prod(out[1:])) * int(np.prod(layer.kernel.shape[:2]))
    return total


def gemm_gflops(size: int = 2048, seconds: float = 3.0) -> float:
    """Best fp32 matrix-multiply rate of this machine (numpy BLAS and TensorFlow), in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    rates = []
    a @ b
    end = time.perf_counter() + seconds / 2
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - t) / 1e9)
    try:
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            ta, tb = tf.constant(a), tf.constant(b)
            matmul = tf.function(lambda x, y: tf.matmul(x, y))
            matmul(ta, tb).numpy()
            end = time.perf_counter() + seconds / 2
            while time.perf_counter() < end:
                t = time.perf_counter()
                matmul(ta, tb).numpy()
                rates.append(2 * size**3 / (time.perf_counter() - t) / 1e9)
    except ImportError:
        pass
    return max(rates)


def fresh_bundle(image_size: int, classes: list[str], images: np.ndarray, labels: np.ndarray):
    """Build the five models with random backbone weights; fit SVM/RF on real ResNet50 features."""
    import keras
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import LabelEncoder
    from sklearn.svm import SVC

    from models.architectures import FEATURES_LAYER, build_custom_cnn, build_transfer_model
    from models.backbones import BackboneWeights
    from models.bundle import Bundle
    from models.preprocess import preprocess_for

    keras.utils.set_random_seed(0)
    weights = BackboneWeights(mode="none")
    networks = {
        "resnet50": build_transfer_model("resnet50", image_size, weights, len(classes)),
        "vgg16": build_transfer_model("vgg16", image_size, weights, len(classes)),
        "custom_cnn": build_custom_cnn(image_size, len(classes), "improved"),
    }
    resnet = networks["resnet50"]
    extractor = keras.Model(resnet.inputs, resnet.get_layer(FEATURES_LAYER).output)
    features = np.asarray(extractor.predict(preprocess_for("resnet50", images), batch_size=32, verbose=0))
    estimators = {
        "svm": SVC(kernel="rbf", gamma="scale", C=1.0, probability=True, random_state=0).fit(features, labels),
        "random_forest": RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=42).fit(
            features, labels
        ),
    }
    manifest = {"classes": classes, "image_size": image_size, "backbone_weights": weights.to_manifest()}
    return Bundle(
        path=Path("."),
        manifest=manifest,
        classes=classes,
        image_size=image_size,
        networks=networks,
        estimators=estimators,
        label_encoder=LabelEncoder().fit(classes),
        digest="fresh",
    )


def time_naive(engine, paths: Sequence[Path]) -> tuple[float, list[int]]:
    """The reference implementation's path: per scan, Model.predict on each model separately,
    with the ResNet50 features recomputed for SVM and again for Random Forest."""
    import keras

    from models.architectures import FEATURES_LAYER
    from models.preprocess import preprocess_for

    # The bundle's networks as saved (no BatchNorm folding, float32): what the reference ran.
    networks = engine.bundle.networks
    resnet = networks.get("resnet50")
    extractor = keras.Model(resnet.inputs, resnet.get_layer(FEATURES_LAYER).output) if resnet else None
    labels = []
    start = time.perf_counter()
    for path in paths:
        image = load_scan(path, engine.image_size)[None]
        probs = {}
        for name in engine.model_names:
            if name in networks:
                probs[name] = networks[name].predict(preprocess_for(name, image), verbose=0)
            else:
                features = extractor.predict(preprocess_for(name, image), verbose=0)
                probs[name] = engine.estimator_probabilities(name, features)
        labels.append(int(np.argmax(engine.ensemble_probabilities(probs)[0])))
    return len(paths) / (time.perf_counter() - start), labels


def time_per_model_compiled(engine, paths: Sequence[Path]) -> float:
    """One scan per call through the engine's compiled per-model functions (no Model.predict overhead)."""
    start = time.perf_counter()
    for path in paths:
        image = load_scan(path, engine.image_size)[None]
        probs = {name: engine.predict_model_probabilities(name, image) for name in engine.model_names}
        engine.ensemble_probabilities(probs)
    return len(paths) / (time.perf_counter() - start)


def time_batched(engine, paths: Sequence[Path], batch_size: int) -> tuple[float, dict[Path, int]]:
    """The engine on prefetched batches: decode overlaps with compute.

    Returns scans classified per second and the ensemble label of each scan that decoded;
    scans that fail to decode count neither in the rate nor in the labels.
    """
    from models.pipeline import iter_prefetched_batches

    labels: dict[Path, int] = {}
    start = time.perf_counter()
    for batch in iter_prefetched_batches(paths, lambda p: load_scan(p, engine.image_size), batch_size):
        loaded = [item for item in batch if item.ok]
        for item in batch:
            if not item.ok:
                logger.warning("skipping %s: %s", item.item, item.error)
        if not loaded:
            continue
        images = np.stack([item.value for item in loaded])
        predicted = np.argmax(engine.predict_probabilities(images)["ensemble"], axis=1).tolist()
        labels.update(zip((item.item for item in loaded), predicted))
    elapsed = time.perf_counter() - start
    return len(labels) / elapsed, labels


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def warm_up(engine, image: np.ndarray, batch_size: int) -> None:
    """Trace every forward function once (full batch and single scan) outside the timings."""
    engine.predict_probabilities(np.repeat(image[None], batch_size, axis=0))
    for name in engine.model_names:
        engine.predict_model_probabilities(name, image[None])
    for model in engine.bundle.networks.values():
        model.predict(image[None].astype(np.float32), verbose=0)


def run(args: argparse.Namespace) -> dict:
    """Run all measurements on the same scans; return the result record."""
    import keras

    from bench.sizes import resolve_image_size
    from models.bundle import load_bundle
    from models.engine import InferenceEngine
    from models.precision import bfloat16_supported

    image_size, size_source = resolve_image_size(args.image_size, args.bundle)
    scans = pick_scans(Path(args.data), args.scans)
    paths = [p for p, _ in scans]
    if args.bundle:
        bundle = load_bundle(args.bundle)
        bundle_f32 = bundle
    else:
        if args.backbone_weights != "none":
            raise SystemExit("without --bundle only --backbone-weights none is supported")
        classes = sorted({c for _, c in scans})
        images = np.stack([load_scan(p, image_size) for p in paths])
        labels = np.array([classes.index(c) for _, c in scans])
        bundle_f32 = bundle = fresh_bundle(image_size, classes, images, labels)
    fp32 = InferenceEngine(bundle_f32, precision="float32", batch_size=args.batch_size)
    # Without hardware bfloat16 the arithmetic is emulated: timing it would only mislead.
    bf16_supported = bfloat16_supported()
    bf16 = None
    if bf16_supported:
        bf16_networks = args.bf16_networks.split(",") if args.bf16_networks else None
        bf16 = InferenceEngine(bundle, precision="bfloat16", batch_size=args.batch_size,
                               bf16_networks=bf16_networks)
    else:
        logger.warning("no hardware bfloat16 on this machine: bf16 fields are null")
    sample = load_scan(paths[0], fp32.image_size)
    for engine in (fp32, bf16):
        if engine is not None:
            warm_up(engine, sample, min(args.batch_size, len(paths)))

    flops = {name: count_flops(model) for name, model in fp32.networks.items()}
    flops_per_scan = sum(flops.values())
    # GEMM is sampled before, between and after the rounds and the best kept: other
    # processes on the machine can only lower a sample, never raise it.
    gemm_samples = [gemm_gflops(seconds=args.gemm_seconds)]
    naive_paths = paths[: args.naive_scans] if args.naive_scans else paths
    naive_rate, _ = time_naive(fp32, naive_paths)
    compiled_paths = paths[: max(1, min(len(paths), args.compiled_naive_scans))]
    compiled_rate = time_per_model_compiled(fp32, compiled_paths)
    # Alternate the two batched paths and keep the best of each: other processes share the CPU.
    fp32_rates: list[float] = []
    bf16_rates: list[float] = []
    fp32_labels: dict[Path, int] = {}
    bf16_labels: dict[Path, int] = {}
    for _ in range(args.repeats):
        rate, fp32_labels = time_batched(fp32, paths, args.batch_size)
        fp32_rates.append(rate)
        if bf16 is not None:
            rate, bf16_labels = time_batched(bf16, paths, args.batch_size)
            bf16_rates.append(rate)
        gemm_samples.append(gemm_gflops(seconds=args.gemm_seconds / 2))
    gemm = max(gemm_samples)
    batched = max(fp32_rates)
    limit = gemm * 1e9 / flops_per_scan
    bf16_rate = max(bf16_rates) if bf16 is not None else None
    both = [p for p in fp32_labels if p in bf16_labels]
    agreement = float(np.mean([fp32_labels[p] == bf16_labels[p] for p in both])) if both else None
    return {
        "naive_scans_per_s": round(naive_rate, 3),
        "batched_scans_per_s": round(batched, 3),
        "bf16_supported": bf16_supported,
        "bf16_scans_per_s": _round(bf16_rate, 3),
        "bf16_top1_agreement": _round(agreement, 4),
        "flops_per_scan": flops_per_scan,
        "gemm_gflops_fp32": round(gemm, 1),
        "limit_scans_per_s": round(limit, 3),
        "naive_compiled_scans_per_s": round(compiled_rate, 3),
        "batched_vs_limit": round(batched / limit, 3),
        "batched_vs_naive": round(batched / naive_rate, 2),
        "bf16_vs_batched": _round(bf16_rate / batched, 2) if bf16_rate is not None else None,
        "flops_per_model": flops,
        "bf16_networks": (sorted(n for n, p in bf16.network_precision.items() if p == "bfloat16")
                          if bf16 is not None else None),
        "gemm_samples": [round(g, 1) for g in gemm_samples],
        "batched_runs": [round(r, 3) for r in fp32_rates],
        "bf16_runs": [round(r, 3) for r in bf16_rates] if bf16 is not None else None,
        "scans": len(paths),
        "scans_decoded": len(fp32_labels),
        "naive_scans": len(naive_paths),
        "naive_compiled_scans": len(compiled_paths),
        "batch_size": args.batch_size,
        "image_size": fp32.image_size,
        "image_size_source": size_source,
        "weights": "bundle" if args.bundle else "none",
        "keras_backend": keras.backend.backend(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="labelled folder (one subfolder per class)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--scans", type=int, default=64)
    parser.add_argument("--naive-scans", type=int, default=0, help="limit the slow naive path (0 = all)")
    parser.add_argument("--compiled-naive-scans", type=int, default=16,
                        help="scans for the compiled one-scan-per-call variant (informational)")
    parser.add_argument("--bf16-networks", default="",
                        help="comma list of networks run in bfloat16 (default: the engine's default)")
    parser.add_argument("--repeats", type=int, default=3, help="batched rounds; the best is reported")
    parser.add_argument("--gemm-seconds", type=float, default=3.0, help="time spent measuring GEMM")
    parser.add_argument("--bundle", help="trained bundle folder (otherwise fresh random weights)")
    parser.add_argument("--backbone-weights", default="none", help="only 'none' without --bundle")
    parser.add_argument("--image-size", type=int, default=None,
                        help="fresh-weights size (default: the default recipe's, 128; 224 is the reference's); "
                             "with --bundle only the bundle's own")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    # Run as a script (python bench/inference.py), the repository root is not on sys.path.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
