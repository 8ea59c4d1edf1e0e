"""The model bundle: save, verify (SHA-256 of every file before loading anything) and load."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from models import ESTIMATOR_NAMES, NETWORK_NAMES
from models.backbones import file_digest
from models.preprocessing_record import (PreprocessingMismatch, check_preprocessing, installed_versions,
                                         preprocessing_record)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LABEL_ENCODER_FILE = "label_encoder.joblib"
# Files with these suffixes can execute code or carry weights when loaded; any such file
# in a bundle folder must be listed in the manifest (plots or reports may sit beside it).
MODEL_SUFFIXES = (".keras", ".joblib", ".pkl", ".pickle", ".h5", ".hdf5", ".npz", ".npy", ".pb")
_PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "jax", "scikit-learn", "numpy", "joblib")


class BundleError(RuntimeError):
    """A bundle is incomplete, tampered with, or otherwise unusable (message names the file)."""


@dataclass
class Bundle:
    """A verified, loaded bundle: networks, estimators, label encoder and manifest."""

    path: Path
    manifest: dict
    classes: list[str]
    image_size: int
    networks: dict[str, Any]
    estimators: dict[str, Any]
    label_encoder: Any
    ensemble_weights: dict[str, float] = field(default_factory=dict)
    digest: str = ""
    preprocessing_warnings: list[str] = field(default_factory=list)

    @property
    def model_names(self) -> list[str]:
        """Names of the models present, in canonical order."""
        return [n for n in (*NETWORK_NAMES, *ESTIMATOR_NAMES) if n in self.networks or n in self.estimators]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_versions() -> dict[str, str]:
    """Return installed versions of the packages that decide whether a bundle loads."""
    return {"python": platform.python_version(), **installed_versions(_PACKAGES)}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_bundle(
    out_dir: str | Path,
    *,
    networks: Mapping[str, Any],
    estimators: Mapping[str, Any],
    label_encoder: Any,
    manifest: Mapping[str, Any],
) -> dict:
    """Write networks (.keras), estimators and label encoder (joblib) and manifest.json; return the manifest.

    The manifest is written last, so a folder without one is an unfinished bundle.
    """
    import joblib

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in networks:
        if name not in NETWORK_NAMES:
            raise ValueError(f"unknown network {name!r}; expected one of {NETWORK_NAMES}")
    for name in estimators:
        if name not in ESTIMATOR_NAMES:
            raise ValueError(f"unknown estimator {name!r}; expected one of {ESTIMATOR_NAMES}")
    if estimators and "resnet50" not in networks:
        raise ValueError("svm/random_forest need the resnet50 network (they use its features)")
    for key in ("classes", "image_size"):
        if key not in manifest:
            raise ValueError(f"manifest needs {key!r}")
    (out / MANIFEST_NAME).unlink(missing_ok=True)

    files: dict[str, str] = {}
    for name, model in networks.items():
        target = out / f"{name}.keras"
        tmp = out / f"{name}.tmp.keras"
        model.save(tmp)
        os.replace(tmp, target)
        files[target.name] = file_digest(target)
    for filename, obj in [(f"{n}.joblib", e) for n, e in estimators.items()] + [
        (LABEL_ENCODER_FILE, label_encoder)
    ]:
        buffer = io.BytesIO()
        joblib.dump(obj, buffer)
        data = buffer.getvalue()
        _write_atomic(out / filename, data)
        files[filename] = _sha256(data)

    full = dict(manifest)
    full["classes"] = [str(c) for c in manifest["classes"]]
    full["image_size"] = int(manifest["image_size"])
    full["models"] = [n for n in (*NETWORK_NAMES, *ESTIMATOR_NAMES) if n in networks or n in estimators]
    full["format_version"] = FORMAT_VERSION
    full["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    full["packages"] = package_versions()
    full["preprocessing"] = preprocessing_record(full["models"])
    full["files"] = dict(sorted(files.items()))
    _write_atomic(out / MANIFEST_NAME, json.dumps(full, indent=2, sort_keys=True).encode())
    logger.info("saved bundle %s with %s", out, ", ".join(full["models"]))
    return full


def _read_manifest(bundle: Path) -> tuple[dict, bytes]:
    path = bundle / MANIFEST_NAME
    if not bundle.is_dir():
        raise BundleError(f"bundle folder not found: {bundle}")
    if not path.is_file():
        raise BundleError(f"{MANIFEST_NAME} is missing in {bundle}")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{MANIFEST_NAME} has no 'files' table")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{MANIFEST_NAME} format_version {manifest.get('format_version')!r} is not {FORMAT_VERSION}"
        )
    return manifest, raw


def verify_bundle(bundle_dir: str | Path) -> dict:
    """Check every listed file's SHA-256 and that no unlisted model file is present; return the manifest.

    Nothing is unpickled or loaded here. Raises BundleError naming the offending file.
    """
    bundle = Path(bundle_dir)
    manifest, _ = _read_manifest(bundle)
    listed: dict[str, str] = manifest["files"]
    for filename, expected in listed.items():
        # Names must be plain file names: a manifest must not point outside its folder.
        if Path(filename).name != filename or filename in ("", ".", ".."):
            raise BundleError(f"manifest lists an invalid file name {filename!r}")
        path = bundle / filename
        if not path.is_file():
            raise BundleError(f"{filename} is listed in the manifest but missing")
        actual = file_digest(path)
        if actual != expected:
            raise BundleError(f"{filename} does not match its SHA-256 in the manifest (tampered or corrupt)")
    for path in bundle.iterdir():
        if path.name != MANIFEST_NAME and path.name not in listed and path.suffix.lower() in MODEL_SUFFIXES:
            raise BundleError(f"{path.name} is not listed in the manifest; refusing the bundle")
    for name in manifest.get("models", []):
        expected_file = f"{name}.keras" if name in NETWORK_NAMES else f"{name}.joblib"
        if expected_file not in listed:
            raise BundleError(f"{expected_file} (model {name}) is not listed in the manifest")
    if LABEL_ENCODER_FILE not in listed:
        raise BundleError(f"{LABEL_ENCODER_FILE} is not listed in the manifest")
    return manifest


def bundle_digest(bundle_dir: str | Path) -> str:
    """Return the SHA-256 of manifest.json: the identity of a bundle version."""
    _, raw = _read_manifest(Path(bundle_dir))
    return _sha256(raw)


def _verified_bytes(path: Path, expected: str) -> bytes:
    # Hash the very bytes we deserialise, so a file swapped after verify_bundle is caught.
    data = path.read_bytes()
    if _sha256(data) != expected:
        raise BundleError(f"{path.name} changed after verification; refusing to load it")
    return data


def _load_keras_bytes(data: bytes, filename: str) -> Any:
    """Load a .keras archive from the verified bytes in memory (no temporary copy on disk).

    keras.saving.load_model only takes paths, so this uses the loader it delegates to, which
    accepts a file object; keras is pinned in requirements.txt. A network whose archive holds
    assets would make Keras extract them to the system temp folder; ours hold none.
    """
    from keras.src.saving import saving_lib

    try:
        return saving_lib.load_model(io.BytesIO(data), custom_objects=None, compile=False, safe_mode=True)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{filename} could not be loaded as a Keras model: {exc}") from exc


def load_network(bundle_dir: str | Path, name: str) -> tuple[Any, dict]:
    """Verify a bundle and load one of its networks only; return (network, manifest).

    A warm start needs the previous custom CNN, not the whole bundle's backbones.
    """
    bundle = Path(bundle_dir)
    manifest = verify_bundle(bundle)
    filename = f"{name}.keras"
    if name not in NETWORK_NAMES or filename not in manifest["files"]:
        raise BundleError(f"{bundle} holds no {name} network")
    network = _load_keras_bytes(_verified_bytes(bundle / filename, manifest["files"][filename]), filename)
    return network, manifest


def load_bundle(bundle_dir: str | Path) -> Bundle:
    """Verify and load a bundle (networks via Keras, estimators and label encoder via joblib)."""
    import joblib

    bundle = Path(bundle_dir)
    manifest = verify_bundle(bundle)
    try:
        preprocessing_warnings = check_preprocessing(manifest)
    except PreprocessingMismatch as exc:
        raise BundleError(f"{bundle}: {exc}") from exc
    for warning in preprocessing_warnings:
        logger.warning("%s: %s", bundle, warning)
    files = manifest["files"]
    names = manifest.get("models", [])
    encoder = joblib.load(io.BytesIO(_verified_bytes(bundle / LABEL_ENCODER_FILE, files[LABEL_ENCODER_FILE])))
    classes = [str(c) for c in manifest["classes"]]
    if [str(c) for c in getattr(encoder, "classes_", [])] != classes:
        raise BundleError(f"{LABEL_ENCODER_FILE} classes do not match the manifest's class order")
    estimators = {}
    for name in (n for n in names if n in ESTIMATOR_NAMES):
        filename = f"{name}.joblib"
        estimators[name] = joblib.load(io.BytesIO(_verified_bytes(bundle / filename, files[filename])))
    networks = {}
    for name in (n for n in names if n in NETWORK_NAMES):
        filename = f"{name}.keras"
        networks[name] = _load_keras_bytes(_verified_bytes(bundle / filename, files[filename]), filename)
    if estimators and "resnet50" not in networks:
        raise BundleError("svm/random_forest are present but resnet50 (their feature extractor) is not")
    weights = {str(k): float(v) for k, v in (manifest.get("ensemble_weights") or {}).items()}
    return Bundle(
        path=bundle,
        manifest=manifest,
        classes=classes,
        image_size=int(manifest["image_size"]),
        networks=networks,
        estimators=estimators,
        label_encoder=encoder,
        ensemble_weights=weights,
        digest=bundle_digest(bundle),
        preprocessing_warnings=preprocessing_warnings,
    )
