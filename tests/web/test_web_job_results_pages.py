"""Server side of the upload, job and results pages: the results filters, sort and exports
(GET /api/v1/results), the per-study summary of a job, scan thumbnails, and what the pages render."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from db.models import Job, ModelVersion, Prediction, Scan
from test_openapi import Contract, RecordingClient
from web.formatting import ago, exact
from web_helpers import png_bytes, upload_data

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
MODELS = ["resnet50", "vgg16", "custom_cnn", "svm", "random_forest"]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def _predict(session, scan: Scan, version: int, labels: list[str], ensemble: str, confidence: float) -> None:
    """Five models' labels and the ensemble with its agreement, as a worker stores them."""
    for name, label in zip(MODELS, labels):
        session.add(Prediction(scan_id=scan.id, model_version_id=version, model_name=name, label=label,
                               confidence=confidence, probabilities={c: 0.7 if c == label else 0.1 for c in CLASSES}))
    session.add(Prediction(scan_id=scan.id, model_version_id=version, model_name="ensemble", label=ensemble,
                           confidence=confidence, agreement=sum(label == ensemble for label in labels),
                           probabilities={c: confidence if c == ensemble else (1 - confidence) / 3 for c in CLASSES}))


@pytest.fixture()
def stored(app, active_version, session) -> dict:
    """Two jobs, two model versions, scans with every agreement from 3 to 5 and known times."""
    old = ModelVersion(digest="b" * 64, bundle_path="/b", manifest={"classes": CLASSES}, backbone_weights="none",
                       status="retired")
    job1, job2 = Job(name="one", sealed=True, status="done"), Job(name="two", sealed=True, status="done")
    session.add_all([old, job1, job2])
    session.flush()
    rows = [  # job, path, study, version, five labels, ensemble, confidence, hours after T0
        (job1, "s1/a.png", "s1", active_version, ["glioma"] * 5, "glioma", 0.95, 0),
        (job1, "s1/b.png", "s1", active_version, ["glioma", "glioma", "glioma", "glioma", "notumor"], "glioma", 0.60, 1),
        (job1, "s2/c.png", "s2", active_version, ["notumor", "notumor", "notumor", "svm", "glioma"], "notumor", 0.70, 2),
        (job2, "s3/d.png", "s3", old.id, ["pituitary"] * 5, "pituitary", 0.99, 30),
    ]
    ids = []
    for index, (job, path, study, version, labels, ensemble, conf, hours) in enumerate(rows):
        scan = Scan(job_id=job.id, sha256=f"{index:064x}", path=path, study=study, status="classified",
                    model_version_id=version, classified_at=T0 + timedelta(hours=hours))
        session.add(scan)
        session.flush()
        _predict(session, scan, version, labels, ensemble, conf)
        ids.append(scan.id)
    session.commit()
    return {"job1": job1.id, "job2": job2.id, "old": old.id, "active": active_version, "ids": ids}


def get(client, auth, **params):
    response = client.get("/api/v1/results", query_string=params, headers=auth("viewer"))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def paths(body) -> list[str]:
    return [r["path"] for r in body["results"]]


def test_new_filters_confidence_range_agreement_and_model_version(client, auth, stored):
    assert paths(get(client, auth, max_confidence="0.7")) == ["s2/c.png", "s1/b.png"]
    assert paths(get(client, auth, min_confidence="0.65", max_confidence="0.96")) == ["s2/c.png", "s1/a.png"]
    # agreement: how many of the five give the ensemble's label (5, 4, 3, 5)
    assert paths(get(client, auth, max_agreement="4")) == ["s2/c.png", "s1/b.png"]
    assert paths(get(client, auth, min_agreement="4", max_agreement="4")) == ["s1/b.png"]
    assert paths(get(client, auth, min_agreement="5")) == ["s3/d.png", "s1/a.png"]
    # ... the ensemble's agreement even while another model's rows are shown (they carry none)
    svm = get(client, auth, model="svm", max_agreement="3")
    assert paths(svm) == ["s2/c.png"] and svm["results"][0]["label"] == "svm" and svm["results"][0]["agreement"] is None
    assert paths(get(client, auth, model_version=str(stored["old"]))) == ["s3/d.png"]
    assert get(client, auth, model_version=str(stored["active"]), job=str(stored["job1"]))["total"] == 3
    # a bare date as `until` takes in that whole day
    assert get(client, auth, until="2025-03-01")["total"] == 3
    assert get(client, auth, until="2025-03-01T12:30:00Z")["total"] == 1


def test_sort_by_any_row_field_either_way_with_ties_newest_first(client, auth, stored):
    assert paths(get(client, auth, sort="confidence")) == ["s1/b.png", "s2/c.png", "s1/a.png", "s3/d.png"]
    assert paths(get(client, auth, sort="-confidence")) == ["s3/d.png", "s1/a.png", "s2/c.png", "s1/b.png"]
    assert paths(get(client, auth, sort="agreement")) == ["s2/c.png", "s1/b.png", "s3/d.png", "s1/a.png"]
    assert paths(get(client, auth, sort="path", per_page="2", page="2")) == ["s2/c.png", "s3/d.png"]
    assert paths(get(client, auth, sort="-classified")) == ["s3/d.png", "s2/c.png", "s1/b.png", "s1/a.png"]
    # agreement of the ensemble, also when the svm's rows are listed
    assert paths(get(client, auth, model="svm", sort="agreement"))[0] == "s2/c.png"
    assert paths(get(client, auth)) == ["s3/d.png", "s2/c.png", "s1/b.png", "s1/a.png"]  # default: newest scan


@pytest.mark.parametrize("params", [{"max_confidence": "1.5"}, {"max_confidence": "nan"}, {"min_agreement": "6"},
                                    {"max_agreement": "-1"}, {"max_agreement": "x"}, {"model_version": "0"},
                                    {"model_version": "v2"}, {"sort": "bogus"}, {"sort": "--path"},
                                    {"format": "json_some"}])
def test_bad_new_filters_are_400(client, auth, stored, params):
    response = client.get("/api/v1/results", query_string=params, headers=auth("viewer"))
    assert response.status_code == 400 and response.get_json()["error"] == "bad_filter", response.get_json()


def test_exports_hold_exactly_the_filtered_rows_in_the_chosen_order(client, auth, stored):
    query = {"max_agreement": "4", "sort": "confidence", "per_page": "1", "page": "2"}
    response = client.get("/api/v1/results", query_string={**query, "format": "json_all"}, headers=auth("viewer"))
    assert response.status_code == 200 and response.is_streamed and response.mimetype == "application/json"
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert response.headers["Content-Disposition"] == f"attachment; filename=results-agreement-max-4-{today}.json"
    exported = json.loads(response.get_data(as_text=True))
    assert paths(exported) == ["s1/b.png", "s2/c.png"]  # paging left out, the sort kept
    assert exported["total"] == exported["per_page"] == 2 and exported["page"] == 1
    everything = get(client, auth, max_agreement="4", sort="confidence", per_page="1000")
    assert exported["results"] == everything["results"]  # the same rows as the API's pages
    table = client.get("/api/v1/results", query_string={**query, "format": "csv"}, headers=auth("viewer"))
    rows = list(csv.DictReader(io.StringIO(table.get_data(as_text=True))))
    assert [r["path"] for r in rows] == ["s1/b.png", "s2/c.png"] and [r["agreement"] for r in rows] == ["4", "3"]
    empty = json.loads(client.get("/api/v1/results?label=nothing&format=json_all", headers=auth("viewer")).get_data())
    assert empty["results"] == [] and empty["total"] == 0


def test_new_parameters_and_answers_validate_against_the_openapi_document(app, client, auth, stored):
    contract, recording = Contract(app), RecordingClient(client)
    viewer = auth("viewer")
    for query in ("format=json_all&max_agreement=4&sort=-confidence",
                  f"min_agreement=3&max_confidence=0.9&model_version={stored['active']}&sort=agreement",
                  "until=2025-03-01&format=csv&sort=path"):
        contract.check(recording.get(f"/api/v1/results?{query}", headers=viewer), 200)
    contract.check(recording.get(f"/api/v1/jobs/{stored['job1']}/results", headers=viewer), 200)
    contract.check(recording.get("/api/v1/results?sort=nope", headers=viewer), 400, request_valid=False)


def test_job_results_summarise_each_study(client, auth, session, active_version):
    files = [("p7/a.png", png_bytes(1)), ("p7/b.png", png_bytes(2)), ("p7/c.png", png_bytes(3)),
             ("p9/d.png", png_bytes(4)), ("p9/bad.txt", b"not a scan"), ("loose.png", png_bytes(5))]
    job = client.post("/api/v1/jobs", data=upload_data(files), headers=auth("uploader")).get_json()["id"]
    scans = {s.path: s for s in session.scalars(select(Scan).where(Scan.job_id == job))}
    for path, labels, ensemble in [("p7/a.png", ["glioma"] * 5, "glioma"),
                                   ("p7/b.png", ["glioma", "glioma", "glioma", "svm", "notumor"], "glioma"),
                                   ("p7/c.png", ["notumor"] * 4 + ["glioma"], "notumor"),
                                   ("p9/d.png", ["pituitary"] * 5, "pituitary")]:
        scans[path].status, scans[path].model_version_id = "classified", active_version
        _predict(session, scans[path], active_version, labels, ensemble, 0.8)
    scans["p9/bad.txt"].status, scans["p9/bad.txt"].error = "failed", "cannot decode: not an image"
    session.commit()
    body = client.get(f"/api/v1/jobs/{job}/results", headers=auth("viewer")).get_json()
    assert body["studies"] == [
        {"study": "p7", "scans": 3, "classified": 3, "failed": 0, "pending": 0, "disagree": 2, "needs_review": 0,
         "labels": {"glioma": 2, "notumor": 1}},
        {"study": "p9", "scans": 2, "classified": 1, "failed": 1, "pending": 0, "disagree": 0, "needs_review": 0,
         "labels": {"pituitary": 1}},
        {"study": "", "scans": 1, "classified": 0, "failed": 0, "pending": 1, "disagree": 0, "needs_review": 0,
         "labels": {}},
    ]


def _png(response) -> np.ndarray:
    assert response.status_code == 200 and response.mimetype == "image/png", response.get_data()[:200]
    return np.asarray(Image.open(io.BytesIO(response.get_data())))


def test_thumbnails_are_bounded_kept_in_memory_and_keep_the_shape(client, auth, session):
    from config.storage import blob_path

    wide = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (60, 120), dtype=np.uint8)).save(wide, format="PNG")
    job = client.post("/api/v1/jobs", data=upload_data([("w/wide.png", wide.getvalue())]),
                      headers=auth("uploader")).get_json()["id"]
    scan = session.scalars(select(Scan).where(Scan.job_id == job)).one()
    url = f"/scans/{scan.id}/image"
    assert _png(client.get(url, headers=auth("viewer"))).shape == (60, 120)
    small = client.get(url + "?size=40", headers=auth("viewer"))
    assert _png(small).shape == (20, 40)  # the longer side at most `size`, the shape kept
    assert small.headers["ETag"] != client.get(url, headers=auth("viewer")).headers["ETag"]
    assert _png(client.get(url + "?size=512", headers=auth("viewer"))).shape == (60, 120)  # never enlarged
    for bad in ("0", "15", "513", "100000", "0" * 5000, "12.5", "-40", "abc", "²", "٣٢"):
        response = client.get(url + f"?size={bad}", headers=auth("viewer"))
        assert response.status_code == 400 and "size must be" in response.get_data(as_text=True), bad
    # a thumbnail made once is served from memory: the stored file is not read again
    blob_path(client.application.extensions["mri"].settings.uploads_dir, scan.sha256).unlink()
    assert _png(client.get(url + "?size=40", headers=auth("viewer"))).shape == (20, 40)
    assert client.get(url + "?size=41", headers=auth("viewer")).status_code == 404
    assert client.get(url + "?size=40").status_code == 302  # still only for logged-in users


def test_thumbnail_cache_stays_within_its_byte_budget():
    from web.thumbnails import ThumbnailCache

    cache = ThumbnailCache(max_bytes=250)
    for key in range(5):
        assert cache.get(key, lambda k=key: bytes([k]) * 100) == bytes([key]) * 100
    assert len(cache) == 2  # the two newest
    assert cache.get(4, lambda: b"made again") == bytes([4]) * 100
    assert cache.get(0, lambda: b"made again") == b"made again"


def test_human_times():
    now = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    at = lambda **delta: (now - timedelta(**delta)).isoformat().replace("+00:00", "Z")  # noqa: E731
    assert [ago(at(seconds=10), now), ago(at(minutes=3), now), ago(at(hours=2, minutes=5), now),
            ago(at(days=1, hours=3), now), ago(at(days=4), now), ago(at(days=30), now)] == [
        "just now", "3 min ago", "2 h ago", "yesterday", "4 days ago", "2026-10-30"]
    assert ago(None) == "" and ago("not a time") == "not a time"
    assert exact("2026-11-29T08:11:05.123456Z") == "2026-11-29 08:11:05 UTC"


def test_results_page_filters_sort_links_exports_and_times(client, auth, stored):
    page = client.get(f"/results?max_agreement=4&sort=-confidence&per_page=25&job={stored['job1']}",
                      headers=auth("viewer")).get_data(as_text=True)
    assert "2 result(s)" in page and "s1/b.png" in page and "s1/a.png" not in page
    assert page.index("s2/c.png") < page.index("s1/b.png")  # by confidence, highest first
    # the exports carry exactly the filters and the sort, not the paging
    csv_url = re.search(r'id="csv-link"', page) and re.search(r'href="([^"]+)" id="csv-link"', page).group(1)
    json_url = re.search(r'href="([^"]+)" id="json-link"', page).group(1)
    for url, fmt in ((csv_url, "csv"), (json_url, "json_all")):
        query = dict(p.split("=") for p in url.replace("&amp;", "&").split("?")[1].split("&"))
        assert query == {"max_agreement": "4", "sort": "-confidence", "job": str(stored["job1"]), "format": fmt}
    # sortable headings: this column sorted descending, a click sorts it ascending
    assert re.search(r'aria-sort="descending" class="col-confidence"><a href="\?[^"]*sort=confidence', page)
    assert re.search(r'aria-sort="none" class="col-path"><a href="\?[^"]*sort=path', page)
    # choices: the versions and the labels; the chosen ones selected
    assert f'<option value="{stored["old"]}" ' in page and '<option value="4" selected>4 of 5</option>' in page
    assert '<option value="meningioma" >meningioma</option>' in page or 'value="meningioma"' in page
    # human times with the exact moment on hover
    assert re.search(r'<time datetime="2025-03-01T14:00:00Z" title="2025-03-01 14:00:00 UTC" data-ago>[^<]*</time>', page)
    assert f'src="/scans/{stored["ids"][1]}/image?size=96"' in page
    bad = client.get("/results?sort=sideways", headers=auth("viewer")).get_data(as_text=True)
    assert "sort must be one of" in bad
    unknown = client.get("/results?colour=red", headers=auth("viewer")).get_data(as_text=True)
    assert "unknown filter(s): colour" in unknown


def test_results_page_pages(client, auth, stored):
    page = client.get("/results?per_page=1&page=2&sort=path", headers=auth("viewer")).get_data(as_text=True)
    assert "page 2 of 4" in page and '<span aria-current="page" class="current">2</span>' in page
    assert 'href="?per_page=1&amp;sort=path&amp;page=1" rel="prev"' in page
    assert 'href="?per_page=1&amp;sort=path&amp;page=3" rel="next"' in page


def test_upload_and_job_pages_render_their_parts(client, auth, stored):
    upload = client.get("/", headers=auth("uploader")).get_data(as_text=True)
    assert 'id="drop-zone"' in upload and "webkitdirectory" in upload and 'id="upload-progress"' in upload
    assert re.search(r'<time datetime="[^"]+" title="[^"]+ UTC" data-ago>', upload)  # the latest jobs' times
    job = client.get(f"/jobs/{stored['job1']}", headers=auth("viewer")).get_data(as_text=True)
    assert ('data-class-colours="{&#34;glioma&#34;: &#34;c0&#34;, &#34;meningioma&#34;: &#34;c1&#34;, '
            '&#34;notumor&#34;: &#34;c2&#34;, &#34;pituitary&#34;: &#34;c3&#34;}"') in job
    assert f"/results?job={stored['job1']}&amp;max_agreement=4" in job
    assert " style=" not in upload + job and "<script>" not in upload + job  # the CSP allows neither inline


def test_class_colours_follow_the_name_not_the_order_seen(client, auth, stored, session):
    from web.formatting import class_colour

    # a job page opened before any model version existed colours by name too (no first-come order)
    empty = Job(name="early", sealed=False, status="waiting")
    session.add(empty)
    session.commit()
    for job_id in (empty.id, stored["job1"]):
        page = client.get(f"/jobs/{job_id}", headers=auth("viewer")).get_data(as_text=True)
        assert "&#34;notumor&#34;: &#34;c2&#34;, &#34;pituitary&#34;: &#34;c3&#34;" in page
    results = client.get("/results?sort=path", headers=auth("viewer")).get_data(as_text=True)
    assert 'swatch-text c2">notumor<' in results and 'swatch-text c0">glioma<' in results
    # another class gets one of the four other colours, the same one whatever else exists
    assert class_colour("astrocytoma") == class_colour("astrocytoma") in {"c4", "c5", "c6", "c7"}
    assert len({class_colour(name) for name in ("a", "b", "c", "d", "e", "f", "g", "h")}) > 1
