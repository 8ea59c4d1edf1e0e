"""Start one solo-pool Celery inference worker per visible GPU (the worker-gpu container's command).

Each worker sees exactly one GPU (CUDA_VISIBLE_DEVICES), so each loads the model bundle
once and owns that GPU's memory. If any worker exits, all are stopped and this exits
non-zero, so the container's restart policy brings the set back together.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.procs import Supervisor


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """GPU ids from GPU_IDS ("0,1"), else from `nvidia-smi -L`; [] when none can be found."""
    environ = os.environ if environ is None else environ
    ids = environ.get("GPU_IDS", "").strip()
    if ids:
        return [part.strip() for part in ids.split(",") if part.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split(":", 1)[0].split()[1] for line in out.splitlines() if line.startswith("GPU ")]


def cpu_only_tensorflow() -> bool:
    """True when the installed TensorFlow is the CPU-only build (it would ignore the GPUs)."""
    from importlib import metadata

    try:
        metadata.version("tensorflow-cpu")
    except metadata.PackageNotFoundError:
        return False
    return True


def worker_argv(gpu: str, queues: str, loglevel: str) -> list[str]:
    """The celery command line for the worker bound to one GPU."""
    return ["celery", "-A", "workers", "worker", "-Q", queues, "--pool", "solo",
            "-n", f"gpu{gpu}@%h", "--loglevel", loglevel]


def main(argv: list[str] | None = None) -> int:
    """Run the per-GPU workers until SIGTERM/SIGINT or until one of them exits."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", default="inference,default")
    parser.add_argument("--loglevel", default=os.environ.get("LOG_LEVEL", "INFO"))
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    gpus = visible_gpus()
    if not gpus:
        print("gpu_workers: no GPU visible (nvidia-smi -L found none and GPU_IDS is unset); "
              "check the NVIDIA container toolkit and the device reservation", file=sys.stderr)
        return 2
    if cpu_only_tensorflow() and not args.dry_run:
        print("gpu_workers: this image has the CPU-only TensorFlow; rebuild it with "
              "--build-arg TENSORFLOW_VARIANT=gpu (TENSORFLOW_VARIANT=gpu docker compose build)",
              file=sys.stderr)
        return 2
    commands = {gpu: worker_argv(gpu, args.queues, args.loglevel) for gpu in gpus}
    if args.dry_run:
        for gpu, command in commands.items():
            print(f"CUDA_VISIBLE_DEVICES={gpu} {' '.join(command)}")
        return 0
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(requested=True))
    sup = Supervisor()
    for gpu, command in commands.items():
        sup.start(f"gpu{gpu}", command, {**os.environ, "CUDA_VISIBLE_DEVICES": gpu})
    status = 0
    while not stop["requested"]:
        dead = sup.exited()
        if dead is not None:
            print(f"gpu_workers: {dead.name} exited with {dead.process.returncode}; stopping all",
                  file=sys.stderr)
            status = 1
            break
        time.sleep(1)
    # Warm shutdown lets each worker finish its current batch (tasks are acked late anyway).
    sup.stop_all(grace_s=float(os.environ.get("GPU_WORKER_STOP_GRACE_S", "60")))
    return status


if __name__ == "__main__":
    sys.exit(main())
