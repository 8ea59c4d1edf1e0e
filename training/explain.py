"""Grad-CAM overlays of scan files with a bundle (the `explain` command's library half)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)


def _unique_stem(path: Path, used: set[str]) -> str:
    """The file's name without its extension, with -2, -3 ... when another input had the same one."""
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}-{n}"
    used.add(stem)
    return stem


def explain_paths(bundle_dir: str | Path, paths: Sequence[str | Path], out_dir: str | Path,
                  models: Sequence[str] | None = None) -> dict:
    """Write one overlay PNG per scan (DICOM frame) and model into `out_dir`; return what was written.

    Names are <file stem>[-frame<k>]-<model>.png. `models` defaults to every model of the
    bundle. Returns {"bundle", "overlays": [{path, frame, model, label, confidence, layer, via,
    overlay}], "errors": [{path, error}]}; an undecodable file is an error, not a failure.
    """
    from models.bundle import BundleError, load_bundle, verify_bundle
    from models.explain import Explainer, overlay_png
    from training.decode import decode_file
    from training.predict import _error_reason, expand_paths

    def load() -> tuple[Explainer, list[str]]:
        explainer = Explainer(load_bundle(bundle_dir))
        chosen = list(models or explainer.model_names)
        missing = [m for m in chosen if m not in explainer.model_names]
        if missing:
            raise BundleError(f"{bundle_dir} has no {', '.join(missing)} model "
                              f"(it has {', '.join(explainer.model_names)})")
        return explainer, chosen

    verify_bundle(bundle_dir)  # a wrong bundle path fails before any file is read
    files, errors = expand_paths(paths)
    explainer, chosen = None, []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    overlays: list[dict] = []
    for path in files:
        try:
            scans = decode_file(path)
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not end the run
            errors.append({"path": str(path), "error": _error_reason(exc)})
            continue
        if explainer is None:  # the networks load once something decoded: a folder of junk fails fast
            explainer, chosen = load()
        stem = _unique_stem(path, used)
        for frame, scan in enumerate(scans):
            for model in chosen:
                explanation = explainer.explain(scan.image, model)
                target = out / f"{stem}{f'-frame{frame}' if len(scans) > 1 else ''}-{model}.png"
                target.write_bytes(overlay_png(scan.image, explanation))
                overlays.append({"path": str(path), "frame": frame, "model": model,
                                 "label": explanation.label, "confidence": round(explanation.confidence, 6),
                                 "layer": explanation.layer, "via": explanation.via, "overlay": str(target)})
    log.info("%d overlays written to %s, %d files skipped", len(overlays), out, len(errors))
    return {"bundle": str(bundle_dir), "overlays": overlays, "errors": errors}
