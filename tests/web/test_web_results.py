"""GET /api/v1/results: filters, pagination, bad filters, CSV export."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest

from db.models import Job, Prediction, Scan

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
MODELS = ["resnet50", "vgg16", "custom_cnn", "svm", "random_forest"]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture()
def stored(app, active_version, session):
    """Two jobs of classified scans with known labels, confidences, studies and times."""
    job1, job2 = Job(name="one", sealed=True, status="done"), Job(name="two", sealed=True, status="done")
    session.add_all([job1, job2])
    session.flush()
    rows = [  # job, path, study, ensemble label, confidence, hours after T0
        (job1, "s1/a.png", "s1", "glioma", 0.95, 0), (job1, "s1/b.png", "s1", "notumor", 0.55, 1),
        (job1, "s2/c.png", "s2", "glioma", 0.70, 2), (job2, "=cmd|calc.png", "", "pituitary", 0.99, 30),
    ]
    for index, (job, path, study, label, conf, hours) in enumerate(rows):
        scan = Scan(job_id=job.id, sha256=f"{index:064x}", path=path, study=study, status="classified",
                    model_version_id=active_version, classified_at=T0 + timedelta(hours=hours))
        session.add(scan)
        session.flush()
        for name in [*MODELS, "ensemble"]:
            the_label = "meningioma" if name == "svm" else label
            probs = {c: (conf if c == the_label else (1 - conf) / 3) for c in CLASSES}
            session.add(Prediction(scan_id=scan.id, model_version_id=active_version, model_name=name,
                                   label=the_label, confidence=conf, probabilities=probs,
                                   agreement=4 if name == "ensemble" else None))
    failed = Scan(job_id=job2.id, sha256="f" * 64, path="bad.png", status="failed", error="truncated")
    session.add(failed)
    session.commit()
    return {"job1": job1.id, "job2": job2.id}


def get(client, auth, **params):
    response = client.get("/api/v1/results", query_string=params, headers=auth("viewer"))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_default_is_ensemble_newest_first(client, auth, stored):
    body = get(client, auth)
    assert body["total"] == 4 and body["model"] == "ensemble"
    assert [r["path"] for r in body["results"]] == ["=cmd|calc.png", "s2/c.png", "s1/b.png", "s1/a.png"]
    first = body["results"][0]
    assert set(first) >= {"scan_id", "job_id", "path", "study", "model", "model_version", "label",
                          "confidence", "probabilities", "agreement", "classified"}
    assert first["agreement"] == 4 and first["classified"].startswith("2025-03-02T")


def test_filters(client, auth, stored):
    assert get(client, auth, label="glioma")["total"] == 2
    assert get(client, auth, min_confidence="0.9")["total"] == 2
    assert get(client, auth, study="s1")["total"] == 2
    assert get(client, auth, job=stored["job2"])["total"] == 1
    assert get(client, auth, model="svm", label="meningioma")["total"] == 4
    assert get(client, auth, model="svm", label="glioma")["total"] == 0
    assert get(client, auth, since="2025-03-01T13:30:00Z")["total"] == 2
    assert get(client, auth, until="2025-03-01T13:00:00+00:00")["total"] == 2
    assert get(client, auth, since="2025-03-01", until="2025-03-01T23:59:59")["total"] == 3
    combined = get(client, auth, label="glioma", study="s1", min_confidence="0.9")
    assert [r["path"] for r in combined["results"]] == ["s1/a.png"]


def test_pagination_page_and_limit_offset(client, auth, stored):
    page2 = get(client, auth, per_page=3, page=2)
    assert page2["total"] == 4 and [r["path"] for r in page2["results"]] == ["s1/a.png"]
    window = get(client, auth, limit=2, offset=1)
    assert [r["path"] for r in window["results"]] == ["s2/c.png", "s1/b.png"]


@pytest.mark.parametrize("params", [{"model": "bogus"}, {"min_confidence": "2"}, {"min_confidence": "x"},
                                    {"since": "yesterday"}, {"page": "0"}, {"per_page": "100000"},
                                    {"job": "abc"}, {"format": "xml"}])
def test_bad_filters_are_400(client, auth, stored, params):
    response = client.get("/api/v1/results", query_string=params, headers=auth("viewer"))
    assert response.status_code == 400 and set(response.get_json()) == {"error", "detail"}


def test_csv_export_streams_all_matching_rows(client, auth, stored):
    response = client.get("/api/v1/results", query_string={"format": "csv", "per_page": 1},
                          headers=auth("viewer"))
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.is_streamed
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 4  # CSV ignores paging: the whole filtered set
    assert rows[0]["path"] == "'=cmd|calc.png"  # no spreadsheet formula injection
    assert [k for k in rows[0] if k.startswith("p_")] == [f"p_{c}" for c in CLASSES]
    last = rows[-1]
    assert (last["path"], last["label"], last["model"], last["agreement"]) == ("s1/a.png", "glioma", "ensemble", "4")
    assert float(last["p_glioma"]) == pytest.approx(0.95)
    filtered = client.get("/api/v1/results?format=csv&label=notumor", headers=auth("viewer")).get_data(as_text=True)
    assert len(filtered.strip().splitlines()) == 2


def test_results_page_renders_filters_and_csv_link(client, auth, stored):
    page = client.get("/results?label=glioma", headers=auth("viewer")).get_data(as_text=True)
    assert "2 result(s)" in page and "s1/a.png" in page and "s1/b.png" not in page
    assert "format=csv" in page and "label=glioma" in page
    bad = client.get("/results?min_confidence=7", headers=auth("viewer"))
    assert bad.status_code == 200 and "min_confidence must be" in bad.get_data(as_text=True)


def test_exports_are_named_after_their_job_filters_and_day(client, auth, stored, session):
    job = session.query(Job).filter_by(name="one").one().id
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    response = client.get("/api/v1/results", query_string={"format": "csv", "job": job}, headers=auth("viewer"))
    assert response.headers["Content-Disposition"] == f"attachment; filename=results-job-{job}-{today}.csv"
    plain = client.get("/api/v1/results", query_string={"format": "csv"}, headers=auth("viewer"))
    assert response.get_data(as_text=True).splitlines()[0] == plain.get_data(as_text=True).splitlines()[0]
    query = {"format": "json_all", "label": "glioma", "model": "svm", "reviewed": "false", "study": 'a"b/../c'}
    response = client.get("/api/v1/results", query_string=query, headers=auth("viewer"))
    assert response.status_code == 200 and response.get_json()["model"] == "svm"  # the body is unchanged
    assert response.headers["Content-Disposition"] == (
        f"attachment; filename=results-glioma-svm-study-a-b-c-not-reviewed-{today}.json")
