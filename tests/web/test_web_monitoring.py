"""/healthz (open; database and broker) and /metrics (Prometheus text computed at scrape time)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from db.models import Prediction, Scan
from web_helpers import build_app, png_bytes, upload_data


def test_healthz_is_open_and_reports_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["database"], body["broker"]) == ("ok", "ok", "ok")
    # No worker runs in this test: every queue says so, and nothing waits yet.
    assert body["queues"]["inference"] == {"waiting": 0, "workers": []}
    assert "no worker consumes the inference queue" in body["warnings"]
    assert body["oldest_queued_scan_s"] is None


def test_healthz_says_how_long_the_oldest_queued_scan_waited(client, auth, session, active_version):
    from datetime import timedelta

    from db.base import utcnow

    files = [(f"s/{i}.png", png_bytes(i)) for i in range(2)]
    client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader"))
    body = client.get("/healthz").get_json()
    assert body["queues"]["inference"]["waiting"] == 1 and 0 <= body["oldest_queued_scan_s"] < 60
    for scan in session.query(Scan).all():
        scan.created = utcnow() - timedelta(hours=1)
    session.commit()
    body = client.get("/healthz").get_json()
    assert body["oldest_queued_scan_s"] >= 3600
    assert any("oldest queued scan has waited" in w for w in body["warnings"])


def test_healthz_tells_a_busy_worker_from_a_missing_one_by_its_leases(client, session):
    """A solo-pool worker answers the control channel only between tasks: one training for 45
    minutes, or classifying, holds a live lease, and /healthz says it is busy, not missing."""
    from datetime import timedelta

    from db.base import utcnow
    from db.models import Job, TrainingRun

    run = TrainingRun(status="running", params={}, lease_until=utcnow() + timedelta(minutes=5))
    job = Job(name="j", sealed=True, status="running")
    session.add_all([run, job])
    session.flush()
    scan = Scan(job_id=job.id, sha256="a" * 64, path="s/a.png", status="queued", lease_owner="w",
                lease_until=utcnow() + timedelta(minutes=5))
    session.add(scan)
    session.commit()
    body = client.get("/healthz").get_json()
    assert f"training run #{run.id}" in body["queues"]["training"]["busy"]
    assert "1 leased scan" in body["queues"]["inference"]["busy"]
    assert not any(q in w for w in body["warnings"] for q in ("training queue", "inference queue"))
    assert "no worker consumes the default queue" in body["warnings"]
    # Leases run out when the worker dies: then it is missing again
    run.lease_until = scan.lease_until = utcnow() - timedelta(seconds=1)
    session.commit()
    body = client.get("/healthz").get_json()
    assert "busy" not in body["queues"]["training"] and "busy" not in body["queues"]["inference"]
    assert {"no worker consumes the training queue", "no worker consumes the inference queue"} <= set(body["warnings"])


def test_healthz_reports_an_unreachable_broker_and_database(tmp_path):
    app = build_app(tmp_path, f"sqlite:///{tmp_path / 'missing' / 'no.db'}", redis_url="redis://127.0.0.1:1/0")
    body = app.test_client().get("/healthz")
    assert body.status_code == 503
    payload = body.get_json()
    assert payload["status"] == "error" and payload["database"].startswith("unreachable")
    assert payload["broker"].startswith("unreachable")


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_counts_queues_and_latency(client, auth, session, active_version):
    files = [(f"s/{i}.png", png_bytes(i)) for i in range(6)]
    job_id = client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader")).get_json()["id"]
    scans = session.query(Scan).filter_by(job_id=job_id).order_by(Scan.id).all()
    for scan, latency in zip(scans[:2], (8.0, 300.0)):
        scan.status, scan.model_version_id = "classified", active_version
        session.add(Prediction(scan_id=scan.id, model_version_id=active_version, model_name="ensemble",
                               label="glioma", confidence=0.9, probabilities={"glioma": 0.9}, agreement=5,
                               latency_ms=latency))
    scans[2].status, scans[2].error = "failed", "cannot decode"
    session.commit()
    response = client.get("/metrics", headers=auth("viewer"))
    assert response.status_code == 200 and response.mimetype == "text/plain"
    m = _samples(response.get_data(as_text=True))
    assert m[("mri_queue_depth", (("queue", "inference"),))] == 2  # 6 scans in chunks of 4
    assert m[("mri_queue_depth", (("queue", "training"),))] == 0
    assert m[("mri_broker_up", ())] == 1
    assert m[("mri_scans_classified_total", ())] == 2 and m[("mri_scans_failed_total", ())] == 1
    assert m[("mri_scans", (("status", "queued"),))] == 3
    assert m[("mri_jobs", (("status", "queued"),))] == 1
    assert m[("mri_active_model_version", ())] == active_version
    assert m[("mri_scan_inference_seconds_count", ())] == 2
    assert abs(m[("mri_scan_inference_seconds_sum", ())] - 0.308) < 1e-9
    assert m[("mri_queue_workers", (("queue", "inference"),))] == 0
    assert ("mri_oldest_queued_scan_age_seconds", ()) in m
    assert m[("mri_scan_inference_seconds_bucket", (("le", "0.01"),))] == 1
    assert m[("mri_scan_inference_seconds_bucket", (("le", "0.5"),))] == 2


def test_metrics_survive_a_broker_outage(tmp_path, migrated_sqlite):
    import shutil
    shutil.copy(migrated_sqlite, tmp_path / "m.db")
    app = build_app(tmp_path, f"sqlite:///{tmp_path / 'm.db'}", redis_url="redis://127.0.0.1:1/0")
    from web.auth import get_or_create_user, issue_token
    with app.extensions["mri"].session_factory() as s:
        token = issue_token(s, get_or_create_user(s, "prom", "viewer"))
        s.commit()
    text = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
    assert "mri_broker_up 0.0" in text and "mri_scans_classified_total 0.0" in text
