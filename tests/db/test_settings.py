"""Settings come from the environment, with clear errors for bad values."""
from __future__ import annotations

from pathlib import Path

import pytest

from config import SettingsError, load_settings


def test_defaults_use_sqlite_under_data_dir(tmp_path):
    settings = load_settings({"DATA_DIR": str(tmp_path), "APP_ENV": "test"})
    assert settings.database_url == f"sqlite:///{tmp_path / 'service.db'}"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.inference_batch_size == 32
    assert settings.uploads_dir == tmp_path / "blobs"


def test_production_requires_secret_key(tmp_path):
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        load_settings({"DATA_DIR": str(tmp_path), "APP_ENV": "production"})


def test_development_reads_key_kept_by_make_run(tmp_path):
    (tmp_path / "secret_key").write_text("kept-key\n")
    assert load_settings({"DATA_DIR": str(tmp_path)}).secret_key == "kept-key"


def test_development_without_any_key_fails_fast(tmp_path):
    with pytest.raises(SettingsError, match="make run"):
        load_settings({"DATA_DIR": str(tmp_path)})


@pytest.mark.parametrize("name,value", [("INFERENCE_BATCH_SIZE", "zero"), ("MAX_UPLOAD_MB", "0"),
                                        ("INFERENCE_PRECISION", "fp8"), ("APP_ENV", "staging"),
                                        ("SESSION_COOKIE_SECURE", "maybe"), ("SCAN_LEASE_S", "1"),
                                        ("MAX_IMAGE_PIXELS", "100"), ("REVIEW_TARGET_ACCURACY", "1.5"),
                                        ("REVIEW_TARGET_ACCURACY", "high")])
def test_bad_values_are_refused(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({"DATA_DIR": str(tmp_path), "APP_ENV": "test", name: value})


def test_overrides_win_and_unknown_overrides_are_refused(tmp_path):
    settings = load_settings({"APP_ENV": "test"}, {"data_dir": tmp_path, "inference_batch_size": 4})
    assert settings.data_dir == Path(tmp_path).absolute() and settings.inference_batch_size == 4
    with pytest.raises(SettingsError, match="nonsense"):
        load_settings({"APP_ENV": "test"}, {"nonsense": 1})


def test_reliability_and_security_settings(tmp_path):
    base = {"DATA_DIR": str(tmp_path), "APP_ENV": "test"}
    defaults = load_settings(base)
    assert (defaults.scan_lease_s, defaults.max_image_pixels, defaults.dicom_deidentify,
            defaults.session_cookie_secure) == (60, 36_000_000, True, False)
    changed = load_settings({**base, "SCAN_LEASE_S": "20", "SESSION_COOKIE_SECURE": "on",
                             "DICOM_DEIDENTIFY": "false", "SCAN_MAX_ATTEMPTS": "5"})
    assert (changed.scan_lease_s, changed.session_cookie_secure, changed.dicom_deidentify,
            changed.max_scan_attempts) == (20, True, False, 5)
    assert load_settings({**base, "MAX_SCAN_ATTEMPTS": "2", "SCAN_MAX_ATTEMPTS": "5"}).max_scan_attempts == 2


def test_review_target_accuracy(tmp_path):
    base = {"DATA_DIR": str(tmp_path), "APP_ENV": "test"}
    assert load_settings(base).review_target_accuracy == 0.995
    assert load_settings({**base, "REVIEW_TARGET_ACCURACY": "0.99"}).review_target_accuracy == 0.99
