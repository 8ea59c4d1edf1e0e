"""models.bundle: round trip, and refusal of tampered, missing or unlisted files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.bundle import BundleError, bundle_digest, load_bundle, verify_bundle


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "copy"))


def test_manifest_contents(tiny_bundle):
    manifest = verify_bundle(tiny_bundle)
    assert manifest["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]
    assert manifest["image_size"] == 32 and manifest["format_version"] == 1
    assert set(manifest["files"]) == {
        "resnet50.keras", "vgg16.keras", "custom_cnn.keras",
        "svm.joblib", "random_forest.joblib", "label_encoder.joblib",
    }
    assert all(len(h) == 64 for h in manifest["files"].values())
    assert "keras" in manifest["packages"] and "scikit-learn" in manifest["packages"]
    assert manifest["backbone_weights"]["resnet50"]["mode"] == "none"


def test_round_trip_loads_equal_models(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    assert bundle.model_names == ["resnet50", "vgg16", "custom_cnn", "svm", "random_forest"]
    assert list(bundle.label_encoder.classes_) == bundle.classes
    assert bundle.digest == bundle_digest(tiny_bundle)
    again = load_bundle(tiny_bundle)
    for name, model in bundle.networks.items():
        for a, b in zip(model.get_weights(), again.networks[name].get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("victim", ["svm.joblib", "resnet50.keras", "label_encoder.joblib"])
def test_tampered_file_is_refused(bundle_copy, victim):
    path = bundle_copy / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=victim.replace(".", r"\.")):
        verify_bundle(bundle_copy)
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(bundle_copy)


def test_missing_file_is_refused(bundle_copy):
    (bundle_copy / "random_forest.joblib").unlink()
    with pytest.raises(BundleError, match="random_forest.joblib.*missing"):
        load_bundle(bundle_copy)


def test_unlisted_model_file_is_refused(bundle_copy):
    (bundle_copy / "extra.joblib").write_bytes(b"anything")
    with pytest.raises(BundleError, match="extra.joblib.*not listed"):
        load_bundle(bundle_copy)


def test_plots_beside_a_bundle_are_allowed(bundle_copy):
    (bundle_copy / "history.png").write_bytes(b"\x89PNG")
    assert verify_bundle(bundle_copy)["image_size"] == 32


def test_manifest_edit_changes_digest_and_path_escape_refused(bundle_copy):
    before = bundle_digest(bundle_copy)
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["../outside.joblib"] = "0" * 64
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    assert bundle_digest(bundle_copy) != before
    with pytest.raises(BundleError, match="invalid file name"):
        verify_bundle(bundle_copy)


def test_missing_manifest(bundle_copy):
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(bundle_copy)


def test_loading_writes_nothing_to_the_system_temp_folder(tiny_bundle, tmp_path, monkeypatch):
    import tempfile

    # Workers may write only under DATA_DIR: with no usable system temp folder, loading must still work.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp"))
    bundle = load_bundle(tiny_bundle)
    assert sorted(bundle.networks) == ["custom_cnn", "resnet50", "vgg16"]
    assert not (tmp_path / "no-such-temp").exists()


def test_a_keras_file_that_is_not_a_model_is_a_bundle_error(bundle_copy):
    import hashlib

    path = bundle_copy / "custom_cnn.keras"
    path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: no config.json
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["custom_cnn.keras"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="custom_cnn.keras could not be loaded"):
        load_bundle(bundle_copy)


class _Tripwire:
    """Unpickling this creates a marker file: proof that a pickle was deserialised."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant_tripwire(bundle: Path, filename: str, marker: Path, *, update_manifest: bool) -> None:
    """Replace a joblib file with a pickle that touches `marker` when loaded."""
    import hashlib
    import io

    import joblib

    buffer = io.BytesIO()
    joblib.dump(_Tripwire(marker), buffer)
    (bundle / filename).write_bytes(buffer.getvalue())
    if update_manifest:
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["files"][filename] = hashlib.sha256(buffer.getvalue()).hexdigest()
        (bundle / "manifest.json").write_text(json.dumps(manifest))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_tripwire_fires_when_a_pickle_is_loaded(bundle_copy, tmp_path):
    # The control for the two tests below: with the manifest agreeing, the pickle does run.
    marker = tmp_path / "unpickled"
    _plant_tripwire(bundle_copy, "svm.joblib", marker, update_manifest=True)
    load_bundle(bundle_copy)
    assert marker.exists()


def test_a_tampered_joblib_is_never_unpickled(bundle_copy, tmp_path):
    marker = tmp_path / "unpickled"
    _plant_tripwire(bundle_copy, "svm.joblib", marker, update_manifest=False)
    with pytest.raises(BundleError, match=r"svm\.joblib does not match its SHA-256"):
        load_bundle(bundle_copy)
    assert not marker.exists()


def test_a_tampered_keras_file_stops_loading_before_anything_is_deserialised(bundle_copy, tmp_path):
    # svm.joblib is listed correctly and would be unpickled before any network is loaded; one
    # tampered .keras file must still stop the load before that first deserialisation.
    marker = tmp_path / "unpickled"
    _plant_tripwire(bundle_copy, "svm.joblib", marker, update_manifest=True)
    _flip_a_byte(bundle_copy / "resnet50.keras")
    with pytest.raises(BundleError, match=r"resnet50\.keras does not match its SHA-256"):
        load_bundle(bundle_copy)
    assert not marker.exists()


def _edit_preprocessing(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_the_manifest_records_the_preprocessing_and_a_matching_bundle_loads_quietly(tiny_bundle):
    from models.preprocessing_record import NORMALISATION, PREPROCESSING_VERSION

    record = verify_bundle(tiny_bundle)["preprocessing"]
    assert record["version"] == PREPROCESSING_VERSION
    assert record["normalisation"] == NORMALISATION  # all five models
    assert "INTER_AREA" in record["chain"]["resize"] and "percentile" in record["chain"]["dicom"]
    assert "opencv-python-headless" in record["libraries"] and "pydicom" in record["libraries"]
    assert load_bundle(tiny_bundle).preprocessing_warnings == []


def test_a_bundle_without_a_record_or_from_older_code_loads_with_a_warning(bundle_copy, caplog):
    _edit_preprocessing(bundle_copy, lambda m: m.pop("preprocessing"))
    [warning] = load_bundle(bundle_copy).preprocessing_warnings
    assert "records no preprocessing" in warning and "records no preprocessing" in caplog.text
    _edit_preprocessing(bundle_copy, lambda m: m.update(preprocessing={"version": 1, "libraries": {}}))
    assert "version 1" in load_bundle(bundle_copy).preprocessing_warnings[0]
    _edit_preprocessing(bundle_copy, lambda m: m.update(
        preprocessing={**verify_bundle(bundle_copy).get("preprocessing", {}), "version": 2,
                       "libraries": {"pydicom": "0.9"}}))
    assert any("pydicom" in w and "0.9" in w for w in load_bundle(bundle_copy).preprocessing_warnings)


def test_preprocessing_this_code_cannot_reproduce_is_refused(bundle_copy):
    from models.preprocessing_record import PREPROCESSING_VERSION

    _edit_preprocessing(bundle_copy, lambda m: m["preprocessing"].update(version=PREPROCESSING_VERSION + 1))
    with pytest.raises(BundleError, match="newer than this code"):
        load_bundle(bundle_copy)
    _edit_preprocessing(bundle_copy, lambda m: m["preprocessing"].update(
        version=PREPROCESSING_VERSION, normalisation={"custom_cnn": "pixels / 127.5 - 1"}))
    with pytest.raises(BundleError, match="custom_cnn was trained on inputs normalised as"):
        load_bundle(bundle_copy)
