"""Which image size a bench runs at: the bundle's own, else the default training recipe's."""
from __future__ import annotations

import json
from pathlib import Path


def default_image_size() -> int:
    """The default training recipe's image size (what a first `make run` model is trained at)."""
    from training.recipe import TrainOptions

    return int(TrainOptions.image_size)


def bundle_image_size(bundle: str | Path) -> int:
    """The image size a bundle's manifest declares (the size its networks were built for)."""
    from models.bundle import MANIFEST_NAME

    return int(json.loads((Path(bundle) / MANIFEST_NAME).read_text())["image_size"])


def resolve_image_size(requested: int | None, bundle: str | Path | None) -> tuple[int, str]:
    """(size, where it came from): the bundle's size, else `requested`, else the recipe default.

    A `requested` size that contradicts the bundle's is refused: the engine can only run a
    bundle at the size it was trained at, and a silently ignored option misreports the run.
    """
    if bundle is not None:
        size = bundle_image_size(bundle)
        if requested is not None and requested != size:
            raise SystemExit(f"--image-size {requested} differs from the bundle's image_size {size}; "
                             "leave it out to use the bundle's")
        return size, "bundle"
    if requested is not None:
        return requested, "option"
    return default_image_size(), "recipe default"
