"""Scheduled retraining creates one run at a time and only when training data exists."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from db.base import utcnow
from db.models import TrainingRun
from tasks.train import create_scheduled_run, training_options


def test_skipped_without_training_data(factory, settings):
    assert create_scheduled_run(factory, settings) is None
    missing = settings.replace(training_data_dir=settings.data_dir / "nope")
    assert create_scheduled_run(factory, missing) is None
    with factory() as session:
        assert session.scalar(select(func.count(TrainingRun.id))) == 0


def test_one_run_at_a_time_and_runs_whose_worker_died_are_failed(factory, settings, tmp_path):
    conf = settings.replace(training_data_dir=tmp_path)
    run_id = create_scheduled_run(factory, conf)
    with factory() as session:
        run = session.get(TrainingRun, run_id)
        assert run.trigger == "schedule" and run.status == "queued" and run.dispatched_at is not None
    assert create_scheduled_run(factory, conf) is None
    with factory() as session:  # a worker took it and renews its lease: still busy
        run = session.get(TrainingRun, run_id)
        run.status, run.started, run.lease_until = "running", utcnow(), utcnow() + timedelta(minutes=1)
        session.commit()
    assert create_scheduled_run(factory, conf) is None
    with factory() as session:  # the worker died: nothing renewed the lease
        session.get(TrainingRun, run_id).lease_until = utcnow() - timedelta(seconds=1)
        session.commit()
    second = create_scheduled_run(factory, conf)
    assert second is not None and second != run_id
    with factory() as session:
        assert "interrupted" in session.get(TrainingRun, run_id).error


def test_training_options_whitelist(settings, tmp_path):
    conf = settings.replace(training_data_dir=tmp_path)
    run = TrainingRun(params={"epochs": 2, "image_size": 64, "models": ["resnet50", "svm"]})
    options = training_options(run, conf, tmp_path / "out")
    assert (options.epochs, options.image_size, options.models) == (2, 64, ("resnet50", "svm"))
    assert str(options.data) == str(tmp_path)
    # A comma-separated string names models too (it must not be split into characters).
    spelled = training_options(TrainingRun(params={"models": "resnet50, svm"}), conf, tmp_path / "out")
    assert spelled.models == ("resnet50", "svm")
    assert options.backbone_weights == "imagenet"
    offline = conf.replace(backbone_weights="none")
    assert training_options(TrainingRun(params={}), offline, tmp_path / "out").backbone_weights == "none"
    explicit = TrainingRun(params={"backbone_weights": "imagenet"})
    assert training_options(explicit, offline, tmp_path / "out").backbone_weights == "imagenet"
    # The review threshold's target accuracy is the service's REVIEW_TARGET_ACCURACY.
    assert options.review_target_accuracy == 0.995
    strict = conf.replace(review_target_accuracy=0.999)
    assert training_options(TrainingRun(params={}), strict, tmp_path / "out").review_target_accuracy == 0.999
    import pytest
    with pytest.raises(ValueError, match="data"):
        training_options(TrainingRun(params={"data": "/etc"}), conf, tmp_path / "out")
    with pytest.raises(RuntimeError, match="TRAINING_DATA_DIR"):
        training_options(TrainingRun(params={}), settings, tmp_path / "out")


def test_the_worker_refuses_a_weights_path_outside_the_allowed_folders(settings, tmp_path, monkeypatch):
    """The web checks backbone_weights paths before queueing; the worker checks again before reading."""
    import pytest

    from models.backbones import BackboneWeightsError

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    conf = settings.replace(training_data_dir=tmp_path)
    with pytest.raises(BackboneWeightsError, match="outside the folders"):
        training_options(TrainingRun(params={"backbone_weights": "/etc/passwd"}), conf, tmp_path / "out")
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / "escape").symlink_to("/etc/passwd")
    with pytest.raises(BackboneWeightsError, match="outside the folders"):
        training_options(TrainingRun(params={"backbone_weights": str(tmp_path / "keras" / "models" / "escape")}),
                         conf, tmp_path / "out")
    inside = str(tmp_path / "keras" / "models" / "resnet50.h5")
    assert training_options(TrainingRun(params={"backbone_weights": inside}), conf,
                            tmp_path / "out").backbone_weights == inside
