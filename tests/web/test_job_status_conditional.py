"""GET /api/v1/jobs/<id> carries a strong ETag; If-None-Match with it answers 304 with no body."""
from __future__ import annotations

from db.models import Job
from web.serialize import job_json
from web_helpers import png_bytes, upload_data


def _job(client, auth) -> str:
    created = client.post("/api/v1/jobs", data=upload_data([("x/a.png", png_bytes()), ("x/b.png", png_bytes(1))]),
                          headers=auth("uploader")).get_json()
    return created["status_url"]


def test_status_has_a_strong_etag_and_is_revalidated_each_time(client, auth, session):
    url = _job(client, auth)
    first, second = client.get(url, headers=auth("viewer")), client.get(url, headers=auth("viewer"))
    assert first.status_code == second.status_code == 200
    etag, weak = first.get_etag()
    assert etag and not weak and second.get_etag() == (etag, False)
    assert first.headers["Cache-Control"] == "private, no-cache"
    # The body is the one job_json gives for the ORM object: reading columns changes nothing.
    job = session.get(Job, int(url.rsplit("/", 1)[1]))
    assert first.get_json() == job_json(job)


def test_if_none_match_answers_304_until_the_job_changes(client, auth, session):
    url = _job(client, auth)
    etag = client.get(url, headers=auth("viewer")).get_etag()[0]
    for sent in (f'"{etag}"', f'W/"{etag}"', f'"other", "{etag}"'):
        unchanged = client.get(url, headers={**auth("viewer"), "If-None-Match": sent})
        assert unchanged.status_code == 304, sent
        assert unchanged.data == b"" and unchanged.get_etag()[0] == etag
    job = session.get(Job, int(url.rsplit("/", 1)[1]))
    job.done, job.status = 1, "running"
    session.commit()
    changed = client.get(url, headers={**auth("viewer"), "If-None-Match": f'"{etag}"'})
    assert changed.status_code == 200 and changed.get_json()["done"] == 1
    assert changed.get_etag()[0] != etag


def test_a_stale_or_foreign_etag_gets_the_body(client, auth):
    url = _job(client, auth)
    response = client.get(url, headers={**auth("viewer"), "If-None-Match": '"0123456789abcdef"'})
    assert response.status_code == 200 and response.get_json()["total"] == 2


def test_unknown_job_is_404_and_credentials_still_apply(client, auth):
    url = _job(client, auth)
    etag = client.get(url, headers=auth("viewer")).get_etag()[0]
    missing = client.get("/api/v1/jobs/999999", headers={**auth("viewer"), "If-None-Match": f'"{etag}"'})
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    # A known ETag is no credential: without a token the answer is 401, not 304.
    assert client.get(url, headers={"If-None-Match": f'"{etag}"', "Accept": "application/json"}).status_code == 401
