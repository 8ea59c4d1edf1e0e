"""models.backbones: every way backbone weights can be refused, offline."""

from __future__ import annotations

import hashlib

import pytest

from models.backbones import OFFICIAL_FILES, BackboneWeightsError, resolve_backbone_weights


def test_none_mode():
    weights = resolve_backbone_weights("none", "resnet50")
    assert weights.mode == "none" and weights.path is None and weights.keras_weights_arg() is None


def test_missing_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(BackboneWeightsError) as info:
        resolve_backbone_weights(str(missing), "vgg16")
    message = str(info.value)
    assert "not found" in message and OFFICIAL_FILES["vgg16"]["url"] in message


def test_wrong_file_is_refused(tmp_path):
    fake = tmp_path / OFFICIAL_FILES["resnet50"]["filename"]
    fake.write_bytes(b"not the official weights")
    with pytest.raises(BackboneWeightsError, match="refusing"):
        resolve_backbone_weights(str(fake), "resnet50")
    # A folder is searched for the official name, with the same check.
    with pytest.raises(BackboneWeightsError, match="refusing"):
        resolve_backbone_weights(str(tmp_path), "resnet50")


def test_pinned_sha256_mismatch_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "w.h5"
    fake.write_bytes(b"weights?")
    monkeypatch.setenv("BACKBONE_WEIGHTS_SHA256_VGG16", "0" * 64)
    with pytest.raises(BackboneWeightsError, match="SHA-256"):
        resolve_backbone_weights(str(fake), "vgg16")
    right = hashlib.sha256(b"weights?").hexdigest()
    # The right SHA-256 passes the pin but the file is still not the official file (MD5).
    with pytest.raises(BackboneWeightsError, match="MD5"):
        resolve_backbone_weights(str(fake), "vgg16", expected_sha256=right)


def test_imagenet_offline_with_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    # Port 9 on loopback refuses connections: the same failure as an air-gapped network.
    monkeypatch.setenv("BACKBONE_WEIGHTS_BASE_URL", "http://127.0.0.1:9/keras")
    with pytest.raises(BackboneWeightsError) as info:
        resolve_backbone_weights("imagenet", "resnet50")
    message = str(info.value)
    filename = OFFICIAL_FILES["resnet50"]["filename"]
    assert "could not be downloaded" in message
    assert OFFICIAL_FILES["resnet50"]["url"] in message
    assert str(tmp_path / "keras_home" / "models" / filename) in message
    assert "--backbone-weights" in message
    assert not (tmp_path / "keras_home" / "models" / filename).exists()


def test_imagenet_without_download_permission(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(BackboneWeightsError, match="downloading is disabled"):
        resolve_backbone_weights("imagenet", "vgg16", allow_download=False)


def test_unknown_arch():
    with pytest.raises(ValueError):
        resolve_backbone_weights("none", "inception")
