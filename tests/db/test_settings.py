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
                                        ("INFERENCE_PRECISION", "fp8"), ("APP_ENV", "staging")])
def test_bad_values_are_refused(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({"DATA_DIR": str(tmp_path), "APP_ENV": "test", name: value})


def test_overrides_win_and_unknown_overrides_are_refused(tmp_path):
    settings = load_settings({"APP_ENV": "test"}, {"data_dir": tmp_path, "inference_batch_size": 4})
    assert settings.data_dir == Path(tmp_path).absolute() and settings.inference_batch_size == 4
    with pytest.raises(SettingsError, match="nonsense"):
        load_settings({"APP_ENV": "test"}, {"nonsense": 1})
