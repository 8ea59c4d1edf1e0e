"""`make run` queues a quick first model and then the full run, through the real API, once."""
from __future__ import annotations

from sqlalchemy import select

from db.models import TrainingRun
from scripts.run_local import maybe_queue_training
from tests.helpers.labelled_folder import write_labelled_folder
from web_helpers import queued_messages


def test_a_quick_run_then_the_full_run_are_queued_once(app, live_server, auth, session, broker, tmp_path,  # noqa: F811
                                                       capsys):
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
