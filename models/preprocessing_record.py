"""The preprocessing a bundle's models were trained with, recorded in its manifest and checked at load.

A model is only as good as the agreement between the pixels it was trained on and the pixels
it is served. The decode and resize chain (training/decode.py, models/preprocess.py) and each
model's input normalisation are therefore described here under a version number, written
into every bundle's manifest, and compared with the running code when a bundle loads.
Bump PREPROCESSING_VERSION whenever decoding, windowing, resizing or normalisation changes
what a model sees for the same file.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Mapping

logger = logging.getLogger(__name__)

PREPROCESSING_VERSION = 2
"""1: JPEGs shrunk inside libjpeg, 16-bit PNG/TIFF shifted to 8 bits (no record was written).
2: one chain for every format (full decode, area resize), deep images windowed like DICOM."""

NORMALISATION = {
    "resnet50": "caffe: RGB->BGR, minus ImageNet means (103.939, 116.779, 123.68)",
    "vgg16": "caffe: RGB->BGR, minus ImageNet means (103.939, 116.779, 123.68)",
    "custom_cnn": "pixels / 255",
    "svm": "resnet50 pooled features",
    "random_forest": "resnet50 pooled features",
}
"""Each model's input normalisation, as models.preprocess.preprocess_for applies it."""

CHAIN = {
    "decode": "every format at full size (OpenCV; pydicom for DICOM)",
    "resize": "to image_size x image_size: INTER_AREA when shrinking, INTER_LINEAR when enlarging",
    "colour": "grey replicated to RGB; alpha dropped",
    "dicom": "rescale slope/intercept, then WindowCenter/Width, else the 0.5-99.5 percentile "
             "range; MONOCHROME1 inverted",
    "deep_png_tiff": "16-bit and float samples windowed like a DICOM without a window",
}

_LIBRARIES = ("opencv-python-headless", "opencv-python", "pydicom", "numpy", "pillow")


class PreprocessingMismatch(ValueError):
    """A bundle's models were trained with preprocessing this code cannot reproduce."""


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """{distribution: version} of those of `names` that are installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decode and resize images."""
    return installed_versions(_LIBRARIES)


def preprocessing_record(models: list[str]) -> dict[str, Any]:
    """The manifest's `preprocessing` block for a bundle of `models`."""
    return {
        "version": PREPROCESSING_VERSION,
        "chain": dict(CHAIN),
        "normalisation": {name: NORMALISATION[name] for name in models if name in NORMALISATION},
        "libraries": library_versions(),
    }


def check_preprocessing(manifest: Mapping[str, Any]) -> list[str]:
    """Compare a manifest's preprocessing with this code's; return warnings, raise on a mismatch.

    Refused: a newer version than this code knows, or a model normalised differently (its
    inputs would be wrong, not merely a little different). Warned: no record (a bundle made
    before version 2), an older version, other decoding library versions.
    """
    record = manifest.get("preprocessing")
    if not isinstance(record, Mapping):
        return [f"the bundle records no preprocessing: it was trained before version "
                f"{PREPROCESSING_VERSION} (JPEGs shrunk inside libjpeg, 16-bit PNG/TIFF shifted to "
                f"8 bits), so its inputs now differ slightly; retrain it for the best accuracy"]
    version = record.get("version")
    if not isinstance(version, int) or version > PREPROCESSING_VERSION:
        raise PreprocessingMismatch(f"the bundle was trained with preprocessing version {version!r}, "
                                    f"newer than this code's {PREPROCESSING_VERSION}: upgrade the service")
    for name, recorded in (record.get("normalisation") or {}).items():
        if name in NORMALISATION and recorded != NORMALISATION[name]:
            raise PreprocessingMismatch(f"{name} was trained on inputs normalised as {recorded!r}, "
                                        f"but this code normalises them as {NORMALISATION[name]!r}")
    warnings = []
    if version < PREPROCESSING_VERSION:
        warnings.append(f"the bundle was trained with preprocessing version {version}, this code "
                        f"uses {PREPROCESSING_VERSION}; retrain it for the best accuracy")
    recorded_libraries = record.get("libraries") or {}
    for name, installed in library_versions().items():
        if name in recorded_libraries and recorded_libraries[name] != installed:
            warnings.append(f"{name} {installed} decodes here, the bundle was trained with "
                            f"{recorded_libraries[name]}")
    return warnings
