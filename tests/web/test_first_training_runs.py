"""`make run` queues a quick first model and then the full run, through the real API, once."""
from __future__ import annotations

from sqlalchemy import select

from db.models import ModelVersion, TrainingRun
from scripts.run_local import maybe_queue_training
from tests.helpers.labelled_folder import write_labelled_folder
from web_helpers import queued_messages


def test_a_quick_run_then_the_full_run_are_queued_once(app, live_server, auth, session, broker, tmp_path, capsys):
    folder = write_labelled_folder(tmp_path / "folder", per_class=2, size=16)
    settings = app.extensions["mri"].settings
    env = {"APP_ENV": "test", "DATA_DIR": str(settings.data_dir), "DATABASE_URL": settings.database_url,
           "TRAINING_DATA_DIR": str(folder), "BACKBONE_WEIGHTS": "none"}
    token = auth("admin")["Authorization"].split()[1]
    maybe_queue_training(live_server, token, env)
    runs = session.execute(select(TrainingRun).order_by(TrainingRun.id)).scalars().all()
    assert [r.params for r in runs] == [{"backbone_weights": "none", "profile": "quick"}, {"backbone_weights": "none"}]
    # The training worker takes them in this order: the quick one first.
    assert [m["args"] for m in queued_messages(broker, "training")] == [[runs[0].id], [runs[1].id]]
    assert "quick first model" in capsys.readouterr().out
    maybe_queue_training(live_server, token, env)
    assert len(session.execute(select(TrainingRun)).scalars().all()) == 2
    assert "already queued or running" in capsys.readouterr().out


def test_a_lost_full_first_run_is_queued_again_while_only_a_quick_model_exists(app, live_server, auth, session,
                                                                              broker, tmp_path, capsys):
    """A worker killed during the full first run left the quick model active for good (outside-in trial)."""
    folder = write_labelled_folder(tmp_path / "folder", per_class=2, size=16)
    settings = app.extensions["mri"].settings
    env = {"APP_ENV": "test", "DATA_DIR": str(settings.data_dir), "DATABASE_URL": settings.database_url,
           "TRAINING_DATA_DIR": str(folder), "BACKBONE_WEIGHTS": "none"}
    token = auth("admin")["Authorization"].split()[1]
    session.add_all([TrainingRun(status="succeeded", params={"profile": "quick"}),
                     TrainingRun(status="failed", params={}, error="interrupted: the training worker stopped"),
                     ModelVersion(digest="q" * 64, bundle_path="/quick", manifest={"profile": "quick"},
                                  backbone_weights="none", status="active")])
    session.commit()
    maybe_queue_training(live_server, token, env)
    runs = session.execute(select(TrainingRun).order_by(TrainingRun.id)).scalars().all()
    assert [(r.status, r.params) for r in runs][2:] == [("queued", {"backbone_weights": "none"})]
    assert "queueing the full first run again" in capsys.readouterr().out
    session.add(ModelVersion(digest="f" * 64, bundle_path="/full", manifest={"profile": "full"},
                             backbone_weights="none", status="candidate"))
    runs[2].status = "succeeded"
    session.commit()
    maybe_queue_training(live_server, token, env)  # a full version exists now: nothing more
    assert len(session.execute(select(TrainingRun)).scalars().all()) == 3
    assert "no first training run needed" in capsys.readouterr().out
