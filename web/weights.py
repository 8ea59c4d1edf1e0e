"""The one server-side path the API accepts: a training run's `backbone_weights` file, kept to known folders.

`backbone_weights` may name a weights file (or a folder holding the official file) on the
worker. Unchecked, an admin request could make a worker open and hash any file it can
read and show the hashes in the run's log. A path is accepted only inside the Keras cache
($KERAS_HOME/models, where the README tells operators to put the files) or the file or
folder the operator configured as BACKBONE_WEIGHTS, with symlinks and `..` resolved first.
"""
from __future__ import annotations

from pathlib import Path

from config.settings import Settings
from models.backbones import keras_cache_dir
from web.errors import ApiError

NAMED_WEIGHTS = ("imagenet", "none")


def weights_roots(settings: Settings) -> list[Path]:
    """Folders (or one file) under which a requested weights path may lie, symlinks resolved."""
    roots = [keras_cache_dir()]
    configured = settings.backbone_weights.strip()
    if configured and configured.lower() not in NAMED_WEIGHTS:
        roots.append(Path(configured))
    return [root.expanduser().resolve() for root in roots]


def check_backbone_weights(spec: str, settings: Settings) -> None:
    """422 unless `spec` is imagenet, none, the configured BACKBONE_WEIGHTS, or a path under a root."""
    value = spec.strip()
    if value.lower() in NAMED_WEIGHTS or value == settings.backbone_weights.strip():
        return
    path = Path(value).expanduser()
    roots = weights_roots(settings)
    where = " or ".join(str(r) for r in roots)
    if not path.is_absolute():
        raise ApiError(422, "path_not_allowed", "backbone_weights must be imagenet, none or an absolute "
                                                f"path under {where}; got {value!r}")
    resolved = path.resolve()  # follows symlinks, so a link inside a root cannot point outside it
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise ApiError(422, "path_not_allowed", f"backbone_weights {value!r} resolves outside the folders "
                                                f"training may read weights from ({where}); put the file in "
                                                "the Keras cache or set BACKBONE_WEIGHTS")
