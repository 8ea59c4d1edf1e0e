"""Classify scan files and folders with a bundle (the `predict` command's library half)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

# Batches decoded ahead of the one being classified: enough to hide decoding, few enough
# that a huge folder never sits in memory at once.
PREFETCH_BATCHES = 2


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[dict]]:
    """Files as given plus scan files found below folders (sorted); missing paths as errors."""
    from training.datasets import is_scan_name

    files: list[Path] = []
    errors: list[dict] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # skip .git, .cache ...
                found.extend(Path(root) / name for name in names if is_scan_name(name))
            found.sort()
            if not found:
                errors.append({"path": str(path), "error": "folder holds no scan files"})
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append({"path": str(path), "error": "no such file or folder"})
    return files, errors


def _error_reason(exc: Exception) -> str:
    """The plain reason shown for a file that could not be decoded."""
    from training.decode import DecodeError

    if isinstance(exc, DecodeError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read file ({exc.strerror or exc})"
    return f"{type(exc).__name__}: {exc}"


def predict_paths(bundle_dir: str | Path, paths: Sequence[str | Path], batch_size: int = 32,
                  precision: str = "float32") -> dict:
    """Decode and classify every scan; return {"bundle", "precision", "scans": [...], "errors": [...]}.

    Files are decoded in threads a few batches ahead (models.pipeline), so decoding the
    next batch overlaps the engine's compute on the current one; memory stays bounded.
    `precision` is a worker's INFERENCE_PRECISION setting, so the labels are those served.
    """
    from models.bundle import bundle_digest, verify_bundle
    from models.engine import InferenceEngine
    from models.pipeline import iter_prefetched_batches
    from models.precision import resolve_precision
    from training.decode import decode_file

    manifest = verify_bundle(bundle_dir)
    image_size = int(manifest["image_size"])
    used = resolve_precision(precision)
    files, errors = expand_paths(paths)
    engine = None
    scans: list[dict] = []
    batches = iter_prefetched_batches(files, lambda path: decode_file(path, target_size=image_size),
                                      batch_size=batch_size, prefetch=PREFETCH_BATCHES)
    for batch in batches:
        images: list[np.ndarray] = []
        where: list[tuple[Path, int | None]] = []
        for loaded in batch:
            if not loaded.ok:
                errors.append({"path": str(loaded.item), "error": _error_reason(loaded.error)})
                continue
            for scan in loaded.value:
                images.append(scan.image)
                where.append((loaded.item, scan.frame))
        if not images:
            continue
        # Load the networks only once something decoded: a folder of junk fails fast.
        engine = engine or InferenceEngine.from_bundle(bundle_dir, precision=used, batch_size=batch_size)
        for (path, frame), result in zip(where, engine.classify(images)):
            scans.append({"path": str(path), "frame": frame, **result})
    models = engine.model_names if engine is not None else list(manifest.get("models", []))
    return {"bundle": str(bundle_dir), "bundle_digest": bundle_digest(bundle_dir), "models": models,
            "precision": used, "scans": scans, "errors": errors}


def render_table(result: dict) -> str:
    """A plain-text table: one row per scan, then the files that could not be classified."""
    models = result["models"]
    header = ["scan", "ensemble", "confidence", "agree", "review", *models]
    rows = []
    for scan in result["scans"]:
        name = scan["path"] + (f" [frame {scan['frame']}]" if scan.get("frame") is not None else "")
        ens = scan["ensemble"]
        rows.append([
            name, ens["label"], f"{ens['probabilities'][ens['label']]:.3f}",
            f"{ens['agreement']}/{len(scan['predictions'])}",
            {True: "yes", False: "no"}.get(ens.get("needs_review"), "-"),
            *[scan["predictions"][m]["label"] for m in models],
        ])
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.append(f"{len(rows)} scan(s) classified")
    if result["errors"]:
        lines.append(f"{len(result['errors'])} file(s) could not be classified:")
        lines += [f"  {e['path']}: {e['error']}" for e in result["errors"]]
    return "\n".join(lines)
