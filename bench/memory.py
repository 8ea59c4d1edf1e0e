"""Resident memory of an inference worker, step by step: imports, bundle, engine, batches, prefetch.

    python bench/memory.py [--data DIR] [--scans 500] [--batch-size 32] [--image-size 128]
                           [--bundle DIR] [--precision auto]

Runs in its own process what a worker runs for one job (load the bundle, build the engine,
decode with prefetch threads and classify batch after batch, as tasks/classify.py does) and
prints one JSON line with the RSS after each step, the peak (VmHWM) and the sizes that explain
it: network weights as loaded and as served (folded, cast), the decoded batches in flight.
Each step reports VmRSS (now) and VmHWM (the peak so far).
The helpers also read another process's memory (bench/service.py reads its worker's).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(REPO))

MIB = 1024 * 1024


def process_memory(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS since start or the last reset) of a process, in MiB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def reset_peak(pid: int | str = "self") -> bool:
    """Restart a process's VmHWM from its current RSS (Linux clear_refs 5); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def weights_mib(models: dict[str, Any]) -> float:
    """Bytes of every variable of the given Keras models, in MiB (as stored: float32 or bfloat16)."""
    import numpy as np

    total = 0
    for model in models.values():
        for variable in model.weights:
            total += int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize
    return round(total / MIB, 1)


def build_fresh_bundle(out: Path, image_size: int) -> Path:
    """A fresh-weights bundle (as bench/service.py uses), built in a child process so that
    building it (SVM/RF fitting, saving) leaves nothing in the process being measured."""
    code = ("import sys; from pathlib import Path; from tests.helpers.tiny_bundle import make_tiny_bundle; "
            "make_tiny_bundle(Path(sys.argv[1]), image_size=int(sys.argv[2]))")
    subprocess.run([sys.executable, "-c", code, str(out), str(image_size)], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"})
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, build and classify like a worker; return RSS per step and the sizes behind it."""
    from bench.service import pick_files
    from bench.sizes import resolve_image_size

    image_size, size_source = resolve_image_size(args.image_size, args.bundle)
    work = Path(tempfile.mkdtemp(prefix="mri-memory-"))
    bundle_dir = Path(args.bundle) if args.bundle else build_fresh_bundle(work / "bundle", image_size)
    steps: dict[str, dict[str, float]] = {"start": process_memory()}
    import keras  # noqa: F401 - the step measures the framework's own footprint

    steps["framework imported"] = process_memory()
    from models.bundle import load_bundle
    from models.engine import InferenceEngine
    from models.pipeline import iter_prefetched_batches
    from tasks.runtime import resolve_precision
    from training.decode import decode_file

    bundle = load_bundle(bundle_dir)
    steps["bundle loaded"] = process_memory()
    precision = resolve_precision(args.precision)
    engine = InferenceEngine(bundle, precision=precision, batch_size=args.batch_size)
    steps["engine built"] = process_memory()
    paths = pick_files(Path(args.data), args.scans)

    def load(path: Path):
        return decode_file(path, target_size=image_size)[0].image

    first = True
    started = time.perf_counter()
    classified = 0
    for batch in iter_prefetched_batches(paths, load, args.batch_size):
        images = [item.value for item in batch if item.ok]
        if images:
            classified += len(engine.classify(images))
        if first:
            steps["first batch classified"] = process_memory()
            first = False
    elapsed = time.perf_counter() - started
    memory = process_memory()
    steps["job done"] = memory
    batch_mib = args.batch_size * image_size * image_size * 3 / MIB
    return {
        "steps_mib": steps, "peak_rss_mib": memory["VmHWM"],
        "peak_rss_gib": round(memory["VmHWM"] / 1024, 2),
        "weights_loaded_mib": weights_mib(bundle.networks),
        "weights_served_mib": weights_mib(engine.networks),
        "batch_uint8_mib": round(batch_mib, 2), "batch_float32_mib": round(batch_mib * 4, 2),
        "scans": len(paths), "classified": classified, "scans_per_s": round(classified / elapsed, 2),
        "batch_size": args.batch_size, "image_size": image_size, "image_size_source": size_source,
        "precision": precision, "network_precision": engine.network_precision,
        "keras_backend": keras.backend.backend(), "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print one JSON line."""
    from bench.service import DEFAULT_DATA

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of scans (searched recursively)")
    parser.add_argument("--scans", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=None,
                        help="fresh-weights bundle size (default: the bundle's, else the recipe's 128)")
    parser.add_argument("--bundle", help="a trained bundle instead of fresh weights")
    parser.add_argument("--precision", default=os.environ.get("INFERENCE_PRECISION", "auto"),
                        choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
