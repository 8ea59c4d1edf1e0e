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


def test_a_status_poll_loads_the_token_and_its_owner_in_one_query(app, client, auth):
    """Every API request checks a token: its owner comes in the same query, not a second one."""
    from sqlalchemy import event

    url = _job(client, auth)
    headers = auth("viewer")
    etag = client.get(url, headers=headers).get_etag()[0]
    client.get(url, headers=headers)  # last_used is written at most once per resolution, not per poll
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    engine = app.extensions["mri"].engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        response = client.get(url, headers={**headers, "If-None-Match": f'"{etag}"'})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert response.status_code == 304
    assert all(s.lstrip().upper().startswith("SELECT") for s in statements), statements  # nothing written
    token_queries = [s for s in statements if "FROM api_tokens" in s]
    assert len(token_queries) == 1 and "users" in token_queries[0].split("FROM", 1)[1], token_queries
    assert not [s for s in statements if "FROM users" in s], statements
