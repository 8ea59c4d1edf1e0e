"""With the database unreachable the web answers 503 (JSON for the API, a plain page for browsers),
never a stack trace, and recovers by itself once the database is back."""
from __future__ import annotations

import re

import pytest
import sqlalchemy

from db.migrate import upgrade
from web_helpers import build_app, png_bytes, upload_data

CLOSED_PORT_URL = "postgresql+psycopg://postgres@127.0.0.1:1/x"


def assert_database_unavailable(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json() == {"error": "database_unavailable", "detail": response.get_json()["detail"]}
    assert "Traceback" not in response.get_data(as_text=True) and response.headers["Retry-After"]


def assert_plain_503_page(response) -> None:
    text = response.get_data(as_text=True)
    assert response.status_code == 503 and response.mimetype == "text/html", text
    assert "database" in text and "Traceback" not in text and "psycopg" not in text


@pytest.fixture()
def down_app(tmp_path, broker):
    """An app whose DATABASE_URL points at a closed port."""
    app = build_app(tmp_path, CLOSED_PORT_URL)
    yield app
    app.extensions["mri"].engine.dispose()


def test_api_and_healthz_answer_503_json_when_the_database_cannot_be_reached(down_app):
    client = down_app.test_client()
    headers = {"Authorization": "Bearer some-token"}
    for method, url in (("GET", "/api/v1/models"), ("GET", "/api/v1/jobs/1"), ("GET", "/api/v1/results"),
                        ("POST", "/api/v1/training-runs"), ("GET", "/metrics")):
        assert_database_unavailable(client.open(url, method=method, headers=headers))
    upload = client.post("/api/v1/jobs", data=upload_data([("a.png", png_bytes())]), headers=headers)
    assert_database_unavailable(upload)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error" and body["database"].startswith("unreachable")


def test_pages_answer_a_plain_503_page(down_app):
    client = down_app.test_client()
    assert_plain_503_page(client.get("/", headers={"Authorization": "Bearer some-token"}))
    page = client.get("/login").get_data(as_text=True)  # the form itself needs no database
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert_plain_503_page(client.post("/login", data={"csrf_token": csrf, "token": "some-token"}))


def test_a_real_database_going_away_and_coming_back(tmp_path, postgres_url, broker):
    upgrade(postgres_url)
    app = build_app(tmp_path, postgres_url)
    from web.auth import get_or_create_user, issue_token

    with app.extensions["mri"].session_factory() as s:
        headers = {"Authorization": f"Bearer {issue_token(s, get_or_create_user(s, 'ops', 'viewer'))}"}
        s.commit()
    client = app.test_client()
    assert client.get("/api/v1/models", headers=headers).status_code == 200  # the pool holds a connection now
    name = postgres_url.rsplit("/", 1)[1]
    admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            # Refuse new connections and cut the open ones: the database is gone for this app.
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        assert_database_unavailable(client.get("/api/v1/models", headers=headers))
        assert_plain_503_page(client.get("/results", headers=headers))
        assert client.get("/healthz").status_code == 503
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert client.get("/api/v1/models", headers=headers).status_code == 200
        assert client.get("/healthz").status_code == 200
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.dispose()
        app.extensions["mri"].engine.dispose()
