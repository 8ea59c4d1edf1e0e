"""POST /api/v1/training-runs takes warm_start and profile in params; other unknown fields stay refused."""
from __future__ import annotations

from db.models import TrainingRun


def test_warm_start_and_profile_are_accepted_and_unknown_fields_still_refused(client, auth, session, broker):
    response = client.post("/api/v1/training-runs", json={"params": {"warm_start": True, "profile": "quick",
                                                                    "warm_start_replay": 2000,
                                                                    "warm_start_freeze": 3}},
                           headers=auth("admin"))
    assert response.status_code == 202, response.get_json()
    assert session.get(TrainingRun, response.get_json()["id"]).params == {"warm_start": True, "profile": "quick",
                                                                         "warm_start_replay": 2000,
                                                                         "warm_start_freeze": 3}
    response = client.post("/api/v1/training-runs", json={"params": {"warm_start": True, "warm": True}},
                           headers=auth("admin"))
    assert response.status_code == 422 and "warm" in str(response.get_json())
    response = client.post("/api/v1/training-runs", json={"params": {"warm_start": True}, "profile": "quick"},
                           headers=auth("admin"))
    assert response.status_code == 422


def test_a_bad_warm_start_or_profile_value_is_refused_before_anything_is_queued(client, auth, session, broker):
    for params, word in (({"warm_start": "yes"}, "warm_start"), ({"profile": "fast"}, "profile"),
                         ({"warm_start": 1}, "warm_start"), ({"warm_start_replay": -1}, "warm_start_replay"),
                         ({"warm_start_replay": 2.5}, "warm_start_replay"),
                         ({"warm_start_freeze": -2}, "warm_start_freeze"),
                         ({"warm_start_freeze": True}, "warm_start_freeze")):
        response = client.post("/api/v1/training-runs", json={"params": params}, headers=auth("admin"))
        assert response.status_code == 422, params
        assert response.get_json()["error"] == "bad_params" and word in response.get_json()["detail"]
    assert session.query(TrainingRun).count() == 0
