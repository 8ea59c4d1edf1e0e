"""The same web paths against a real PostgreSQL: upload, status, results, CSV, activation."""
from __future__ import annotations

from sqlalchemy import select

from db.migrate import upgrade
from db.models import Prediction, Scan
from web_helpers import build_app, png_bytes, queued_messages, upload_data


def _app(tmp_path, postgres_url):
    upgrade(postgres_url)
    return build_app(tmp_path, postgres_url)


def _token(app, role: str) -> dict[str, str]:
    from web.auth import get_or_create_user, issue_token

    with app.extensions["mri"].session_factory() as s:
        token = issue_token(s, get_or_create_user(s, role, role))
        s.commit()
    return {"Authorization": f"Bearer {token}"}


def test_upload_status_results_on_postgres(tmp_path, postgres_url, broker):
    app = _app(tmp_path, postgres_url)
    try:
        client = app.test_client()
        from db.models import ModelVersion
        with app.extensions["mri"].session_factory() as s:
            s.add(ModelVersion(digest="d" * 64, bundle_path="/b", manifest={"classes": ["glioma", "notumor"]},
                               backbone_weights="none", status="candidate"))
            s.commit()
        files = [(f"study/{i}.png", png_bytes(i)) for i in range(5)] + [("study/dup.png", png_bytes(0))]
        created = client.post("/api/v1/jobs", data=upload_data(files), headers=_token(app, "uploader"))
        assert created.status_code == 202
        job_id = created.get_json()["id"]
        viewer = _token(app, "viewer")
        assert client.get(f"/api/v1/jobs/{job_id}", headers=viewer).get_json()["total"] == 6
        activated = client.post("/api/v1/models/1/activate", headers=_token(app, "reviewer"))
        assert activated.status_code == 200 and activated.get_json()["dispatched_jobs"] == 1
        assert [len(m["args"][0]) for m in queued_messages(broker, "inference")] == [4, 2]
        with app.extensions["mri"].session_factory() as s:
            scan = s.execute(select(Scan).where(Scan.job_id == job_id).order_by(Scan.id)).scalars().first()
            s.add(Prediction(scan_id=scan.id, model_version_id=1, model_name="ensemble", label="glioma",
                             confidence=0.8, probabilities={"glioma": 0.8, "notumor": 0.2}, agreement=3))
            scan.status, scan.model_version_id = "classified", 1
            from db.base import utcnow
            scan.classified_at = utcnow()
            s.commit()
        results = client.get(f"/api/v1/jobs/{job_id}/results", headers=viewer).get_json()
        assert results["scans"][0]["ensemble"]["label"] == "glioma"
        listed = client.get("/api/v1/results?label=glioma&since=2000-01-01&min_confidence=0.5", headers=viewer)
        assert listed.get_json()["total"] == 1
        with client.get("/api/v1/results?format=csv", headers=viewer) as streamed:  # close ends the request
            csv_text = streamed.get_data(as_text=True)
        assert csv_text.splitlines()[1].split(",")[2] == "study/0.png"
        assert client.get("/healthz").get_json()["database"] == "ok"
    finally:
        app.extensions["mri"].engine.dispose()
