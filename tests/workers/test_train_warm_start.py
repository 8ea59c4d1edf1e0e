"""A training run's warm start, profile and feature cache: from its params and the settings into the
recipe, and through a real run (the gate still decides). Reuse of stored features across runs is
tested on the recipe (tests/training/test_retrain_speed.py)."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from config.settings import SettingsError, load_settings
from db.models import ModelVersion, TrainingRun
from tasks.train import ALLOWED_PARAMS, create_scheduled_run, run_training, training_options
from tests.helpers.labelled_folder import write_labelled_folder
from tests.workers.jobdata import activate_bundle


def _settings(tmp_path, **environ):
    return load_settings(environ={"APP_ENV": "test", "TRAINING_DATA_DIR": str(tmp_path), **environ},
                         overrides={"data_dir": tmp_path / "data"})


def test_params_and_settings_become_options(tmp_path):
    conf = _settings(tmp_path)
    out = tmp_path / "out"
    assert {"warm_start", "profile"} <= set(ALLOWED_PARAMS)
    active = ModelVersion(bundle_path="/bundles/v1", manifest={"image_size": 96, "custom_cnn_variant": "improved"})
    warm = training_options(TrainingRun(params={"warm_start": True}), conf, out, active)
    assert (warm.warm_start, warm.image_size, warm.cnn_variant) == ("/bundles/v1", 96, "improved")
    sized = training_options(TrainingRun(params={"warm_start": True, "image_size": 64}), conf, out, active)
    assert sized.image_size == 64  # what the run asks for wins (the recipe then refuses the mismatch)
    assert training_options(TrainingRun(params={"warm_start": True}), conf, out, None).warm_start is None
    assert training_options(TrainingRun(params={}), conf, out, active).warm_start is None
    with pytest.raises(ValueError, match="warm_start"):
        training_options(TrainingRun(params={"warm_start": "yes"}), conf, out, active)
    quick = training_options(TrainingRun(params={"profile": "quick", "epochs": 2}), conf, out)
    assert (quick.profile, quick.image_size, quick.views, quick.cnn_epochs, quick.epochs) == ("quick", 64, 0, 3, 2)
    assert "quick first model" in quick.notes
    full = training_options(TrainingRun(params={}), conf, out)
    assert (full.profile, full.notes, full.image_size) == ("full", "", 128)
    with pytest.raises(ValueError, match="profile"):
        training_options(TrainingRun(params={"profile": "fast"}), conf, out)
    # The feature cache: DATA_DIR/feature-cache unless FEATURE_CACHE_DIR says otherwise; 0 MB turns it off.
    assert full.feature_cache == tmp_path / "data" / "feature-cache" and full.feature_cache_max_mb == 4096
    moved = _settings(tmp_path, FEATURE_CACHE_DIR=str(tmp_path / "fc"), FEATURE_CACHE_MAX_MB="0")
    options = training_options(TrainingRun(params={}), moved, out)
    assert (options.feature_cache, options.feature_cache_max_mb) == (tmp_path / "fc", 0)
    with pytest.raises(SettingsError, match="FEATURE_CACHE_MAX_MB"):
        _settings(tmp_path, FEATURE_CACHE_MAX_MB="-1")
    assert _settings(tmp_path, RETRAIN_WARM_START="yes").retrain_warm_start is True


def test_a_warm_start_takes_the_active_versions_backbone_weights_unless_told_otherwise(tmp_path):
    """Offline, with BACKBONE_WEIGHTS at its imagenet default, a warm start of a version trained on
    random backbones must continue on them, not fail fetching ImageNet (seen from the API)."""
    conf = _settings(tmp_path)
    assert conf.backbone_weights == "imagenet"
    out = tmp_path / "out"
    active = ModelVersion(bundle_path="/bundles/v1", manifest={
        "image_size": 128, "custom_cnn_variant": "deep",
        "backbone_weights": {"mode": "none", "path": None, "sha256": None, "requested": "none"}})
    assert training_options(TrainingRun(params={"warm_start": True}), conf, out, active).backbone_weights == "none"
    replayed = training_options(TrainingRun(params={"warm_start": True, "warm_start_replay": 2000}), conf, out, active)
    assert replayed.warm_start_replay == 2000
    frozen = training_options(TrainingRun(params={"warm_start": True, "warm_start_freeze": 3}), conf, out, active)
    assert frozen.warm_start_freeze == 3
    assert training_options(TrainingRun(params={"warm_start": True}), conf, out, active).warm_start_replay is None
    asked = training_options(TrainingRun(params={"warm_start": True, "backbone_weights": "imagenet"}), conf, out, active)
    assert asked.backbone_weights == "imagenet"
    # Without a warm start the setting applies as before.
    assert training_options(TrainingRun(params={}), conf, out, active).backbone_weights == "imagenet"
    legacy = ModelVersion(bundle_path="/bundles/v0", manifest={"image_size": 128})  # no record: the setting
    assert training_options(TrainingRun(params={"warm_start": True}), conf, out, legacy).backbone_weights == "imagenet"


def test_scheduled_runs_warm_start_when_configured(factory, settings, tmp_path):
    conf = settings.replace(training_data_dir=tmp_path, retrain_warm_start=True)
    run_id = create_scheduled_run(factory, conf)
    with factory() as session:
        assert session.get(TrainingRun, run_id).params == {"warm_start": True}
        session.get(TrainingRun, run_id).status = "failed"
        session.commit()
    plain = create_scheduled_run(factory, settings.replace(training_data_dir=tmp_path))
    with factory() as session:
        assert session.get(TrainingRun, plain).params == {}


@pytest.fixture()
def cnn_bundle(tmp_path):
    from tests.helpers.tiny_bundle import make_tiny_bundle

    return make_tiny_bundle(tmp_path / "cnn", image_size=32, models=("custom_cnn",))


def test_a_warm_run_continues_the_active_cnn_and_the_gate_decides(tmp_path, cnn_bundle):
    from db.migrate import upgrade
    from db.session import make_engine, make_session_factory

    url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    data = write_labelled_folder(tmp_path / "folder", per_class=6, size=40)
    settings = _settings(data, BACKBONE_WEIGHTS="none")
    settings = settings.replace(data_dir=tmp_path / "data", database_url=url, inference_batch_size=8)
    active_id = activate_bundle(factory, cnn_bundle)
    with factory() as session:
        run = TrainingRun(trigger="manual", params={"warm_start": True, "models": "custom_cnn", "epochs": 1,
                                                    "val_fraction": 0.25})
        session.add(run)
        session.commit()
        run_id = run.id
    run_training(factory, settings, run_id)
    with factory() as session:
        first = session.get(TrainingRun, run_id)
    assert first.status == "succeeded", first.error
    assert f"[warm start] continuing version {active_id}'s custom CNN for 3 epochs" in first.log
    # The deep variant continues with its stem frozen; the tiny bundle's 4-convolution CNN trains every layer.
    variant = json.loads((cnn_bundle / "manifest.json").read_text()).get("custom_cnn_variant") or "improved"
    assert ("(its first 3 convolutions frozen)" in first.log) == (variant == "deep")
    with factory() as session:
        version = session.execute(select(ModelVersion).where(ModelVersion.id != active_id)).scalar_one()
        manifest = version.manifest
    # The active bundle's size and variant (32 px, improved), its CNN continued; the gate decided.
    assert (manifest["image_size"], manifest["custom_cnn_variant"]) == (32, "improved")
    assert manifest["warm_start"]["from"] == str(cnn_bundle) and manifest["epochs"]["custom_cnn"] == 3
    assert first.decision is not None and first.decision["active"]["version"] == active_id
    assert manifest["feature_cache"]["folder"] == str(tmp_path / "data" / "feature-cache")


def test_a_warm_start_that_cannot_work_trains_from_scratch_and_says_why(tmp_path):
    from db.migrate import upgrade
    from db.session import make_engine, make_session_factory
    from tests.helpers.tiny_bundle import make_tiny_bundle

    url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    data = write_labelled_folder(tmp_path / "folder", per_class=6, size=40)
    settings = _settings(data).replace(data_dir=tmp_path / "data", database_url=url, inference_batch_size=8)
    activate_bundle(factory, make_tiny_bundle(tmp_path / "cnn48", image_size=48, models=("custom_cnn",)))
    with factory() as session:  # the run asks for another image size than the active CNN's
        run = TrainingRun(trigger="manual", params={"warm_start": True, "models": "custom_cnn", "epochs": 1,
                                                    "cnn_epochs": 1, "val_fraction": 0.25, "image_size": 32})
        session.add(run)
        session.commit()
        run_id = run.id
    run_training(factory, settings, run_id)
    with factory() as session:
        run = session.get(TrainingRun, run_id)
        assert run.status == "succeeded", run.error
        assert "cannot be continued (--warm-start bundle is 48 px but this run trains at 32 px" in run.log
        version = session.get(ModelVersion, run.model_version_id) if run.model_version_id else None
        newest = version or session.execute(select(ModelVersion).order_by(ModelVersion.id.desc())).scalars().first()
        assert newest.manifest["warm_start"] is None and newest.manifest["epochs"]["custom_cnn"] == 1


def test_a_warm_start_reads_the_active_versions_weights_file_only_under_the_allowed_roots(tmp_path):
    from models.backbones import BackboneWeightsError

    conf = _settings(tmp_path)
    active = ModelVersion(bundle_path="/bundles/v1", manifest={
        "image_size": 128, "backbone_weights": {"mode": "file", "requested": "/etc/passwd"}})
    with pytest.raises(BackboneWeightsError, match="outside the folders"):
        training_options(TrainingRun(params={"warm_start": True}), conf, tmp_path / "out", active)
