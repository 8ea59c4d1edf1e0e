"""The five-model engine on an NVIDIA GPU under JAX: its labels against the CPU engine's, then
scans/s for batch sizes 32 to 512 in float32 and bfloat16, within a time budget.

    KERAS_BACKEND=jax python bench/gpu.py [--data DIR] [--bundle DIR] [--image-size 128]
        [--batch-sizes 32,64,128,256,512] [--check-scans 256] [--rounds 5] [--budget-s 540]

Normally started by bench/gpu.sh. What it does, in order:

1. Refuses to run unless Keras runs on JAX and JAX sees a GPU (`--allow-cpu` runs the same
   path on the CPU: that is how the tests exercise it on machines without a GPU).
2. Takes the bundle (`--bundle`), or builds a fresh-weights one at the default recipe's size.
3. Decodes `--check-scans` scans and has the CPU engine classify them in a child process
   (`JAX_PLATFORMS=cpu`, float32): the reference labels.
4. For each precision, builds the engine on the device and checks its ensemble labels on
   those scans against the CPU's; then for each batch size compiles once and times
   `--rounds` batches two ways: the whole engine call as the worker makes it (uint8 in,
   host resize and preprocessing, the three networks on the device, SVM and Random Forest
   on the host, the ensemble) and the three networks alone on inputs already on the device.
5. Prints a table and one JSON line. Exits 1 when float32 labels agree with the CPU's on
   fewer than `--min-agreement` of the scans, 2 when it cannot run at all.

float32 means float32: matrix products and convolutions run at "highest" precision unless
`--fp32-precision default` lets the GPU use TF32. bfloat16 is the engine's own bfloat16
mode (its default networks unless `--bf16-networks` names others). Batch sizes that would
not finish within `--budget-s` are skipped and listed, never silently dropped.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "brain-mri" / "Training"
logger = logging.getLogger("bench.gpu")


def parse_sizes(text: str) -> list[int]:
    """'32,64,128' -> [32, 64, 128] (positive, ascending, no repeats)."""
    sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers: {text!r}")
    return sizes


def check_platform(allow_cpu: bool) -> dict[str, Any]:
    """Keras on JAX, a GPU visible to JAX (unless allow_cpu); what runs where, as a record."""
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(f"Keras runs on {keras.backend.backend()!r}: set KERAS_BACKEND=jax")
    import jax

    devices = jax.devices()
    if devices[0].platform != "gpu" and not allow_cpu:
        raise SystemExit(f"JAX sees no GPU (devices: {devices}); --allow-cpu runs this on the CPU")
    return {"keras_backend": "jax", "jax": jax.__version__, "keras": keras.__version__,
            "device": devices[0].platform, "device_kind": devices[0].device_kind, "devices": len(devices)}


def decode_scans(data: Path, count: int, image_size: int) -> tuple[np.ndarray, list[str]]:
    """`count` scans taken round-robin over the class folders, decoded to [N, S, S, 3] uint8."""
    from bench.inference import load_scan, pick_scans

    picked = pick_scans(data, count)
    images, names = [], []
    for path, _ in picked:
        try:
            images.append(load_scan(path, image_size))
            names.append(f"{path.parent.name}/{path.name}")
        except Exception as exc:  # noqa: BLE001 - a file that does not decode is left out, and said
            logger.warning("skipping %s: %s", path, exc)
    if not images:
        raise SystemExit(f"no scan in {data} could be decoded")
    return np.stack(images), names


def engine_probabilities(engine, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Ensemble probabilities [N, C] of the engine on `images`, in batches."""
    out = [engine.predict_probabilities(images[i:i + batch_size])["ensemble"]
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


def cpu_reference(bundle: Path, scans: Path, out: Path, batch_size: int) -> None:
    """Child-process mode: the float32 engine on the CPU classifies the saved scans into `out`."""
    from models.bundle import load_bundle
    from models.engine import InferenceEngine

    engine = InferenceEngine(load_bundle(bundle), precision="float32", batch_size=batch_size)
    np.save(out, engine_probabilities(engine, np.load(scans), batch_size))


def run_cpu_reference(bundle: Path, images: np.ndarray, work: Path, batch_size: int) -> tuple[np.ndarray, float]:
    """Run cpu_reference in a child process that sees only the CPU; return (probabilities, seconds)."""
    scans, out = work / "check-scans.npy", work / "cpu-probabilities.npy"
    np.save(scans, images)
    # Keep the caller's PYTHONPATH: packages carried to a device machine are found through it.
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "KERAS_BACKEND": "jax", "PYTHONPATH": python_path}
    started = time.perf_counter()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--cpu-reference", str(out), "--bundle",
                    str(bundle), "--scans-file", str(scans), "--check-batch", str(batch_size)],
                   env=env, check=True)
    return np.load(out), time.perf_counter() - started


def tile(images: np.ndarray, count: int) -> np.ndarray:
    """`count` images, repeating `images` as needed."""
    reps = -(-count // len(images))
    return np.concatenate([images] * reps)[:count]


def time_batch(engine, images: np.ndarray, batch_size: int, rounds: int) -> dict[str, float]:
    """Compile for this batch size, then time `rounds` engine calls and `rounds` network-only passes."""
    import jax

    from models import NETWORK_NAMES
    from models.preprocess import preprocess_for

    batch = tile(images, batch_size)
    started = time.perf_counter()
    engine.predict_probabilities(batch)  # compiles each network for this batch shape
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(rounds):
        engine.predict_probabilities(batch)
    engine_s = time.perf_counter() - started
    # The networks alone: inputs preprocessed and placed on the device beforehand.
    inputs = {name: jax.device_put(preprocess_for(name, batch)) for name in NETWORK_NAMES
              if name in engine._batched}
    jax.block_until_ready([engine._batched[name](x) for name, x in inputs.items()])
    started = time.perf_counter()
    for _ in range(rounds):
        jax.block_until_ready([engine._batched[name](x) for name, x in inputs.items()])
    networks_s = time.perf_counter() - started
    return {"batch_size": batch_size, "engine_scans_per_s": round(rounds * batch_size / engine_s, 1),
            "networks_scans_per_s": round(rounds * batch_size / networks_s, 1),
            "compile_s": round(compile_s, 1), "seconds": round(compile_s + engine_s + networks_s, 1)}


def agreement(reference: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """Share of equal ensemble labels, the largest probability difference, and how many scans
    got a probability that is not a finite number (counted as disagreeing, left out of the
    difference: argmax would read a NaN row as the first class)."""
    finite = np.isfinite(probabilities).all(axis=1)
    same = (reference.argmax(1) == probabilities.argmax(1)) & finite
    diff = np.abs(reference[finite] - probabilities[finite])
    return {"label_agreement": round(float(np.mean(same)), 4),
            "max_probability_diff": round(float(diff.max()), 5) if diff.size else None,
            "nonfinite_scans": int(np.count_nonzero(~finite))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; return the record."""
    started = time.perf_counter()
    deadline = started + args.budget_s
    platform_record = check_platform(args.allow_cpu)
    import jax

    from bench.sizes import resolve_image_size
    from models.bundle import load_bundle
    from models.engine import InferenceEngine

    if args.fp32_precision == "highest":
        jax.config.update("jax_default_matmul_precision", "highest")
    image_size, size_source = resolve_image_size(args.image_size, args.bundle)
    work = Path(tempfile.mkdtemp(prefix="mri-gpu-"))
    if args.bundle:
        bundle_dir = Path(args.bundle)
    else:
        from tests.helpers.tiny_bundle import make_tiny_bundle  # fresh weights: speed does not depend on them

        bundle_dir = make_tiny_bundle(work / "bundle", image_size=image_size)
    images, _ = decode_scans(Path(args.data), args.check_scans, image_size)
    reference, reference_s = run_cpu_reference(bundle_dir, images, work, args.check_batch)
    bundle = load_bundle(bundle_dir)
    bf16_networks = args.bf16_networks.split(",") if args.bf16_networks else None
    results: dict[str, Any] = {}
    skipped: list[str] = []
    for precision in args.precisions.split(","):
        engine = InferenceEngine(bundle, precision=precision, batch_size=max(args.batch_sizes),
                                 bf16_networks=bf16_networks)
        entry: dict[str, Any] = {
            "networks_in_bf16": sorted(n for n, p in engine.network_precision.items() if p == "bfloat16"),
            **agreement(reference, engine_probabilities(engine, images, args.check_batch)), "batches": []}
        last: dict[str, float] | None = None
        for size in args.batch_sizes:
            # The next batch size costs about as much per scan as the last one, plus compiling.
            expected = 0.0 if last is None else last["seconds"] * 2.5
            if time.perf_counter() + expected > deadline:
                skipped.append(f"{precision} batch {size}")
                continue
            last = time_batch(engine, images, size, args.rounds)
            entry["batches"].append(last)
            print(f"{precision:>9} batch {size:>4}: engine {last['engine_scans_per_s']:>8.1f} scans/s, "
                  f"networks alone {last['networks_scans_per_s']:>8.1f} scans/s "
                  f"(compile {last['compile_s']:.1f} s)", flush=True)
        results[precision] = entry
        del engine
    return {
        **platform_record, "image_size": image_size, "image_size_source": size_source,
        "bundle": str(args.bundle) if args.bundle else "fresh weights", "check_scans": len(images),
        "cpu_reference_s": round(reference_s, 1), "fp32_precision": args.fp32_precision,
        "results": results, "skipped": skipped, "rounds": args.rounds,
        "tensorflow_imported": "tensorflow" in sys.modules, "seconds": round(time.perf_counter() - started, 1),
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="labelled folder (one subfolder per class)")
    parser.add_argument("--bundle", help="a trained bundle (default: fresh weights at the recipe's size)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="fresh-weights size (default: the default recipe's, 128); with --bundle the bundle's")
    parser.add_argument("--batch-sizes", type=parse_sizes, default=parse_sizes("32,64,128,256,512"))
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--bf16-networks", default="", help="comma list run in bfloat16 (default: the engine's)")
    parser.add_argument("--fp32-precision", default="highest", choices=["highest", "default"],
                        help="'default' lets the GPU use TF32 for float32 products")
    parser.add_argument("--check-scans", type=int, default=256, help="scans whose labels are compared")
    parser.add_argument("--check-batch", type=int, default=32, help="batch size of the label check")
    parser.add_argument("--rounds", type=int, default=5, help="timed batches per batch size")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip batch sizes that would end later")
    parser.add_argument("--min-agreement", type=float, default=0.99,
                        help="least float32 label agreement with the CPU engine (exit 1 below it)")
    parser.add_argument("--allow-cpu", action="store_true", help="run the device path on the CPU (tests)")
    parser.add_argument("--cpu-reference", help=argparse.SUPPRESS)  # child mode: output .npy
    parser.add_argument("--scans-file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the table, then one JSON line; exit 1 when float32 labels disagree."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.cpu_reference:
        cpu_reference(Path(args.bundle), Path(args.scans_file), Path(args.cpu_reference), args.check_batch)
        return 0
    try:
        record = run(args)
    except SystemExit as exc:
        print(f"bench/gpu.py: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record), flush=True)
    fp32 = record["results"].get("float32")
    if fp32 is not None and fp32["label_agreement"] < args.min_agreement:
        print(f"float32 labels agree with the CPU engine on {fp32['label_agreement']:.2%} of the scans, "
              f"below {args.min_agreement:.2%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
