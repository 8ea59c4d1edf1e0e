"""The one server-side path the API accepts: a training run's `backbone_weights` file, kept to known folders.

`backbone_weights` may name a weights file (or a folder holding the official file) on the
worker. A path is accepted only inside the Keras cache ($KERAS_HOME/models, where the
README tells operators to put the files) or the file or folder the operator configured as
BACKBONE_WEIGHTS, with symlinks and `..` resolved first (models.backbones; the worker
checks again before it reads).
"""
from __future__ import annotations

from config.settings import Settings
from models.backbones import BackboneWeightsError, check_weights_location
from web.errors import ApiError


def check_backbone_weights(spec: str, settings: Settings) -> None:
    """422 unless `spec` is imagenet, none, the configured BACKBONE_WEIGHTS, or a path under a root."""
    try:
        check_weights_location(spec, settings.backbone_weights)
    except BackboneWeightsError as exc:
        raise ApiError(422, "path_not_allowed", str(exc)) from None
