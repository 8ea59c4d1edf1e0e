"""Reviewed labels through the API: review, withdraw, the scan view, audit, and the results filters."""
from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import select

from db.models import AuditEvent, Job, ModelVersion, Prediction, Review, Scan

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


@pytest.fixture()
def scans(app, active_version, session) -> list[int]:
    """Three classified scans (ensemble says glioma, notumor, glioma) and one still queued."""
    job = Job(name="reviewed", sealed=True, status="running")
    session.add(job)
    session.flush()
    ids = []
    for index, label in enumerate(["glioma", "notumor", "glioma"]):
        scan = Scan(job_id=job.id, sha256=f"{index:064x}", path=f"s/{index}.png", status="classified",
                    model_version_id=active_version)
        session.add(scan)
        session.flush()
        for name in ("resnet50", "ensemble"):
            session.add(Prediction(scan_id=scan.id, model_version_id=active_version, model_name=name,
                                   label=label, confidence=0.8,
                                   probabilities={c: 0.8 if c == label else 0.2 / 3 for c in CLASSES},
                                   agreement=1 if name == "ensemble" else None))
        ids.append(scan.id)
    queued = Scan(job_id=job.id, sha256="e" * 64, path="s/queued.png")
    session.add(queued)
    session.commit()
    return [*ids, queued.id]


def review(client, auth, scan_id, role="reviewer", **body):
    return client.post(f"/api/v1/scans/{scan_id}/review", json=body, headers=auth(role))


def test_review_then_correct_then_withdraw(client, auth, scans, session):
    scan_id = scans[0]
    first = review(client, auth, scan_id, label="glioma", note="confirmed")
    assert first.status_code == 201 and first.headers["Location"].endswith(f"/api/v1/scans/{scan_id}")
    body = first.get_json()
    assert body["review"]["label"] == "glioma" and body["review"]["by"] == "reviewer-user"
    assert body["review"]["note"] == "confirmed" and body["review"]["at"].endswith("Z")
    # A later review (here by an admin) wins.
    second = review(client, auth, scan_id, role="admin", label="meningioma").get_json()
    assert second["review"]["label"] == "meningioma" and second["review"]["by"] == "admin-user"
    assert [r["label"] for r in second["reviews"]] == ["meningioma", "glioma"]
    # The scan as a viewer sees it: predictions of the version that classified it, and the review.
    shown = client.get(f"/api/v1/scans/{scan_id}", headers=auth("viewer")).get_json()
    assert shown["ensemble"]["label"] == "glioma" and shown["review"]["label"] == "meningioma"
    assert shown["status"] == "classified" and shown["model_version"] is not None and shown["job_id"]
    # Only the author or an admin withdraws; withdrawing restores the previous review, then none.
    refused = client.delete(f"/api/v1/scans/{scan_id}/review", headers=auth("reviewer"))
    assert refused.status_code == 403 and "author" in refused.get_json()["detail"]
    restored = client.delete(f"/api/v1/scans/{scan_id}/review", headers=auth("admin")).get_json()
    assert restored["review"]["label"] == "glioma" and restored["reviews"][0]["withdrawn_by"] == "admin-user"
    cleared = client.delete(f"/api/v1/scans/{scan_id}/review", headers=auth("reviewer"))
    assert cleared.status_code == 200 and cleared.get_json()["review"] is None
    nothing = client.delete(f"/api/v1/scans/{scan_id}/review", headers=auth("reviewer"))
    assert nothing.status_code == 404
    events = session.execute(select(AuditEvent.action, AuditEvent.detail).where(
        AuditEvent.target == f"scan:{scan_id}").order_by(AuditEvent.id)).all()
    assert [action for action, _ in events] == ["scan.review", "scan.review", "scan.review_withdraw",
                                                "scan.review_withdraw"]
    assert events[2][1]["label"] == "meningioma" and events[2][1]["restored"] == events[0][1]["review"]
    assert events[3][1]["restored"] is None
    assert session.scalar(select(Review).where(Review.withdrawn.is_(None))) is None


def test_bad_reviews_are_refused(client, auth, scans, session):
    wrong = review(client, auth, scans[0], label="astrocytoma")
    assert wrong.status_code == 422 and "glioma, meningioma, notumor, pituitary" in wrong.get_json()["detail"]
    extra = review(client, auth, scans[0], label="glioma", confidence=1)
    assert extra.status_code == 422 and extra.get_json()["error"] == "unknown_fields"
    assert review(client, auth, scans[0]).status_code == 422
    assert review(client, auth, scans[0], label="glioma", note=["x"]).status_code == 422
    assert review(client, auth, scans[0], label="glioma", note="x" * 2001).status_code == 422
    assert review(client, auth, 999_999, label="glioma").status_code == 404
    assert review(client, auth, scans[0], role="uploader", label="glioma").status_code == 403
    # A queued scan takes the active version's classes; with none active and none classifying it, none.
    assert review(client, auth, scans[3], label="notumor").status_code == 201
    session.execute(select(ModelVersion)).scalar_one().status = "retired"
    session.commit()
    orphan = review(client, auth, scans[3], label="notumor")
    assert orphan.status_code == 422 and "no model version" in orphan.get_json()["detail"]
    assert session.scalar(select(Review.id).where(Review.label == "astrocytoma")) is None


def test_results_filter_and_carry_the_review(client, auth, scans):
    review(client, auth, scans[0], label="glioma")        # agrees with the ensemble
    review(client, auth, scans[1], label="meningioma")    # disagrees
    review(client, auth, scans[2], label="pituitary")     # disagrees, then withdrawn
    client.delete(f"/api/v1/scans/{scans[2]}/review", headers=auth("reviewer"))

    def ids(**params):
        response = client.get("/api/v1/results", query_string=params, headers=auth("viewer"))
        assert response.status_code == 200, response.get_json()
        return sorted(r["scan_id"] for r in response.get_json()["results"])

    assert ids() == sorted(scans[:3])
    assert ids(reviewed="true") == [scans[0], scans[1]]
    assert ids(reviewed="false") == [scans[2]]
    assert ids(disagrees="true") == [scans[1]]
    assert ids(disagrees="false") == [scans[0]]
    # The comparison is with the ensemble, whichever model's rows are listed.
    assert ids(disagrees="true", model="resnet50") == [scans[1]]
    bad = client.get("/api/v1/results?reviewed=yes", headers=auth("viewer"))
    assert bad.status_code == 400 and "reviewed must be true or false" in bad.get_json()["detail"]
    row = client.get("/api/v1/results", query_string={"disagrees": "true"}, headers=auth("viewer")).get_json()
    first = row["results"][0]
    assert (first["label"], first["reviewed_label"], first["reviewed_by"]) == ("notumor", "meningioma",
                                                                              "reviewer-user")
    assert first["reviewed_at"].endswith("Z")
    exported = client.get("/api/v1/results?format=csv", headers=auth("viewer")).get_data(as_text=True)
    rows = {int(r["scan_id"]): r for r in csv.DictReader(io.StringIO(exported))}
    assert rows[scans[1]]["reviewed_label"] == "meningioma" and rows[scans[1]]["reviewed_by"] == "reviewer-user"
    assert rows[scans[1]]["reviewed_at"] and rows[scans[2]]["reviewed_label"] == ""
    assert next(csv.reader(io.StringIO(exported)))[-4:] == ["reviewed_label", "reviewed_by", "reviewed_at", "needs_review"]


def test_a_jobs_results_carry_each_scans_current_review(app, client, auth, scans, session):
    from client.cli import _write_scan_csv
    from db.models import Scan
    from test_openapi import Contract

    review(client, auth, scans[1], label="meningioma")
    review(client, auth, scans[2], label="pituitary")
    client.delete(f"/api/v1/scans/{scans[2]}/review", headers=auth("reviewer"))
    job_id = session.get(Scan, scans[1]).job_id
    response = client.get(f"/api/v1/jobs/{job_id}/results", headers=auth("viewer"))
    body = Contract(app).check(response, 200).get_json()  # the document describes the review too
    by_id = {s["id"]: s for s in body["scans"]}
    assert by_id[scans[1]]["review"]["label"] == "meningioma" and by_id[scans[1]]["review"]["by"] == "reviewer-user"
    assert by_id[scans[2]]["review"] is None and by_id[scans[0]]["review"] is None  # withdrawn, never reviewed
    # the command line's per-job CSV ends with the review columns of the /results CSV
    out = io.StringIO()
    _write_scan_csv(out, body["scans"], ["glioma", "notumor"])
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0][:3] == ["scan_id", "path", "study"] and rows[0][-6:] == [
        "p_glioma", "p_notumor", "reviewed_label", "reviewed_by", "reviewed_at", "needs_review"]
    reviewed = {int(r[0]): r for r in rows[1:]}[scans[1]]
    assert reviewed[-4:-2] == ["meningioma", "reviewer-user"] and reviewed[-2].endswith("Z")
    assert reviewed[-1] == ""  # the fixture's predictions carry no review rule: unknown, as in the /results CSV


def test_a_failed_scan_cannot_be_reviewed_nor_join_the_training_pool(client, auth, scans, session):
    from tasks.reviews import reviewed_scans

    job_id = session.get(Scan, scans[0]).job_id
    failed = Scan(job_id=job_id, sha256="f" * 64, path="s/fake.jpg", status="failed",
                  error="not an image (unrecognised format)")
    session.add(failed)
    session.commit()
    refused = review(client, auth, failed.id, label="glioma")
    assert refused.status_code == 422, refused.get_json()
    assert "failed (not an image (unrecognised format))" in refused.get_json()["detail"]
    assert session.scalar(select(Review.id).where(Review.scan_id == failed.id)) is None
    # One reviewed before the rule existed stays out of the pool
    session.add(Review(scan_id=failed.id, user_id=None, label="glioma", note=""))
    assert review(client, auth, scans[1], label="meningioma").status_code == 201
    session.commit()
    assert [sha for _, sha, _, _ in reviewed_scans(session)] == [session.get(Scan, scans[1]).sha256]
    page = client.get(f"/scans/{failed.id}", headers=auth("reviewer"))
    assert page.status_code == 200
    assert b"cannot be reviewed" in page.data and b'id="review-form"' not in page.data
