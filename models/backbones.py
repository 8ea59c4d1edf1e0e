"""Resolve where ResNet50/VGG16 backbone weights come from: ImageNet cache, a checked file, or none."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# The official Keras "notop" files (include_top=False).  Keras publishes an MD5 for each
# (keras/src/applications/{resnet,vgg16}.py, `file_hash=`); no SHA-256 is published, so the
# MD5 is the authoritative identity check.  An operator who has a SHA-256 from a trusted
# source can pin it too (BACKBONE_WEIGHTS_SHA256_<ARCH> or `expected_sha256=`), and the
# file's SHA-256 is always computed and recorded in the bundle.
OFFICIAL_FILES: dict[str, dict[str, str]] = {
    "resnet50": {
        "filename": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "url": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "md5": "4d473c1dd8becc155b73f8504c6f6626",
    },
    "vgg16": {
        "filename": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "url": "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "md5": "6d6bbae143d832006294945121d1f1fc",
    },
}
ARCHES: tuple[str, ...] = tuple(OFFICIAL_FILES)
# Overrides the download location (e.g. an internal mirror in a hospital network).
BASE_URL_ENV = "BACKBONE_WEIGHTS_BASE_URL"
DOWNLOAD_TIMEOUT_S = 30.0


class BackboneWeightsError(RuntimeError):
    """The requested backbone weights cannot be used; the message says how to supply them."""


@dataclass(frozen=True)
class BackboneWeights:
    """Where one backbone's initial weights come from (recorded in the bundle manifest)."""

    mode: str  # "imagenet" | "none" | "file"
    path: str | None = None
    sha256: str | None = None

    def keras_weights_arg(self) -> str | None:
        """Return the `weights=` argument for keras.applications (a file path or None)."""
        return None if self.mode == "none" else self.path

    def to_manifest(self) -> dict:
        """Return a JSON-ready dict {mode, path, sha256}."""
        return asdict(self)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hash a file in 1 MiB chunks and return the hex digest."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def keras_cache_dir() -> Path:
    """Return the Keras model cache folder ($KERAS_HOME/models or ~/.keras/models), read now."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


NAMED_WEIGHTS = ("imagenet", "none")


def weights_roots(configured: str) -> list[Path]:
    """Folders (or one file) a requested weights path may lie under, symlinks resolved: the Keras
    cache, and `configured` (the operator's BACKBONE_WEIGHTS) when it is a path."""
    roots = [keras_cache_dir()]
    if configured.strip() and configured.strip().lower() not in NAMED_WEIGHTS:
        roots.append(Path(configured.strip()))
    return [root.expanduser().resolve() for root in roots]


def check_weights_location(spec: str, configured: str) -> None:
    """Refuse (BackboneWeightsError) a requested `backbone_weights` that is not imagenet, none, the
    configured value, or an absolute path that resolves under weights_roots(configured).

    A training run's parameters come from an API request; unchecked, they could make a worker
    open and hash any file it can read. The web checks before queueing and the worker again
    before reading, since the two may see different file systems.
    """
    value = spec.strip()
    if value.lower() in NAMED_WEIGHTS or value == configured.strip():
        return
    roots = weights_roots(configured)
    where = " or ".join(str(r) for r in roots)
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise BackboneWeightsError(f"backbone_weights must be imagenet, none or an absolute path under "
                                   f"{where}; got {value!r}")
    resolved = path.resolve()  # follows symlinks, so a link inside a root cannot point outside it
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise BackboneWeightsError(f"backbone_weights {value!r} resolves outside the folders training may "
                                   f"read weights from ({where}); put the file in the Keras cache or set "
                                   "BACKBONE_WEIGHTS")


def _check_arch(arch: str) -> dict[str, str]:
    if arch not in OFFICIAL_FILES:
        raise ValueError(f"unknown backbone {arch!r}; expected one of {', '.join(ARCHES)}")
    return OFFICIAL_FILES[arch]


def _how_to(arch: str) -> str:
    info = OFFICIAL_FILES[arch]
    return (
        f"Download {info['filename']} from {info['url']} on a machine with internet access "
        f"(expected MD5 {info['md5']}), then either pass --backbone-weights /path/to/{info['filename']} "
        f"or place it in the Keras cache as {keras_cache_dir() / info['filename']}. "
        "Use --backbone-weights none to train from random initialisation instead."
    )


def _expected_sha256(arch: str, expected_sha256: str | None) -> str | None:
    value = expected_sha256 or os.environ.get(f"BACKBONE_WEIGHTS_SHA256_{arch.upper()}")
    return value.strip().lower() if value else None


def verify_weights_file(path: str | Path, arch: str, expected_sha256: str | None = None) -> str:
    """Check a weights file is the official Keras notop file for `arch`; return its SHA-256.

    Raises BackboneWeightsError if the file is missing or its hash does not match.
    """
    info = _check_arch(arch)
    file_path = Path(path).expanduser()
    if not file_path.is_file():
        raise BackboneWeightsError(f"backbone weights file not found: {file_path}. {_how_to(arch)}")
    sha256 = file_digest(file_path, "sha256")
    pinned = _expected_sha256(arch, expected_sha256)
    if pinned is not None and sha256 != pinned:
        raise BackboneWeightsError(
            f"refusing {file_path}: SHA-256 {sha256} does not match the expected {pinned} "
            f"for {info['filename']}. {_how_to(arch)}"
        )
    md5 = file_digest(file_path, "md5")
    if md5 != info["md5"]:
        raise BackboneWeightsError(
            f"refusing {file_path}: it is not the official {info['filename']} "
            f"(MD5 {md5}, expected {info['md5']}; SHA-256 {sha256}). {_how_to(arch)}"
        )
    return sha256


def imagenet_available(timeout_s: float = 5.0) -> bool:
    """True when `imagenet` backbone weights can be had: both files cached, or the source answers.

    Lets a launcher choose random-init backbones on an offline machine instead of queueing runs
    that can only fail; it asks the source (or BACKBONE_WEIGHTS_BASE_URL) with a HEAD request.
    """
    missing = [info for info in OFFICIAL_FILES.values() if not (keras_cache_dir() / info["filename"]).is_file()]
    if not missing:
        return True
    base = os.environ.get(BASE_URL_ENV)
    url = base.rstrip("/") + "/" + missing[0]["filename"] if base else missing[0]["url"]
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s) as response:
            return 200 <= response.status < 400
    except (urllib.error.URLError, OSError, TimeoutError, ValueError):
        return False


def _download(arch: str, dest: Path) -> None:
    info = OFFICIAL_FILES[arch]
    base = os.environ.get(BASE_URL_ENV)
    url = base.rstrip("/") + "/" + info["filename"] if base else info["url"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s from %s", info["filename"], url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
                shutil.copyfileobj(response, tmp, length=1 << 20)
                tmp_path = Path(tmp.name)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise BackboneWeightsError(
            f"ImageNet weights for {arch} are not in the Keras cache ({dest}) and could not be "
            f"downloaded from {url}: {exc}. {_how_to(arch)}"
        ) from exc
    try:
        verify_weights_file(tmp_path, arch)
    except BackboneWeightsError:
        tmp_path.unlink(missing_ok=True)
        raise
    tmp_path.replace(dest)


def resolve_backbone_weights(
    spec: str, arch: str, *, expected_sha256: str | None = None, allow_download: bool = True
) -> BackboneWeights:
    """Turn `imagenet` | `none` | PATH into verified BackboneWeights for `arch`.

    `imagenet` uses the Keras cache, downloading once if allowed; a PATH must be the
    official notop file, or a folder holding it under its official name.  Raises BackboneWeightsError with a how-to message otherwise.
    """
    info = _check_arch(arch)
    spec = (spec or "").strip()
    if spec.lower() == "none":
        return BackboneWeights(mode="none")
    if spec.lower() == "imagenet":
        cached = keras_cache_dir() / info["filename"]
        if not cached.is_file():
            if not allow_download:
                raise BackboneWeightsError(
                    f"ImageNet weights for {arch} are not in the Keras cache ({cached}) and "
                    f"downloading is disabled. {_how_to(arch)}"
                )
            _download(arch, cached)
        sha256 = verify_weights_file(cached, arch, expected_sha256)
        return BackboneWeights(mode="imagenet", path=str(cached), sha256=sha256)
    if not spec:
        raise BackboneWeightsError(f"no backbone weights given. {_how_to(arch)}")
    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        # One folder can serve both backbones: it holds the official file names.
        path = path / info["filename"]
    sha256 = verify_weights_file(path, arch, expected_sha256)
    return BackboneWeights(mode="file", path=str(path), sha256=sha256)
