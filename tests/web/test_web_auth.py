"""Bearer tokens (stored hashed), browser login with CSRF, and role checks (401/403)."""
from __future__ import annotations

import hashlib
import re

import pytest
from sqlalchemy import select

from db.models import ApiToken
from web_helpers import png_bytes, upload_data

PROTECTED_GETS = ["/api/v1/jobs/1", "/api/v1/jobs/1/results", "/api/v1/results", "/api/v1/models",
                  "/api/v1/training-runs/1", "/metrics"]


@pytest.mark.parametrize("url", PROTECTED_GETS)
def test_api_needs_a_token(client, url):
    response = client.get(url)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_or_revoked_token_is_401(client, auth, app):
    assert client.get("/api/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    headers = auth("admin")
    assert client.get("/api/v1/models", headers=headers).status_code == 200
    with app.extensions["mri"].session_factory() as s:
        for token in s.execute(select(ApiToken)).scalars():
            token.revoked = True
        s.commit()
    assert client.get("/api/v1/models", headers=headers).status_code == 401


def test_only_the_sha256_of_a_token_is_stored(auth, session):
    token = auth("viewer")["Authorization"].split()[1]
    row = session.execute(select(ApiToken)).scalar_one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (row.token_hash, row.prefix) and row.prefix == token[:8]


@pytest.mark.parametrize("role, upload, activate, train", [
    ("viewer", 403, 403, 403), ("uploader", 202, 403, 403), ("reviewer", 202, 404, 403),
    ("admin", 202, 404, 202),
])
def test_roles(client, auth, role, upload, activate, train):
    headers = auth(role)
    assert client.post("/api/v1/jobs", data=upload_data([("a.png", png_bytes())]),
                       headers=headers).status_code == upload
    assert client.post("/api/v1/models/999/activate", headers=headers).status_code == activate
    assert client.post("/api/v1/training-runs", json={}, headers=headers).status_code == train
    assert client.get("/api/v1/results", headers=headers).status_code == 200


def test_forbidden_is_json_with_reason(client, auth):
    body = client.post("/api/v1/training-runs", headers=auth("viewer")).get_json()
    assert body["error"] == "forbidden" and "admin" in body["detail"]


def _login(client, app, name: str, password: str = "", token: str = ""):
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"csrf_token": csrf, "name": name, "password": password,
                                       "token": token, "next": "/models"})


def test_browser_login_with_password_then_pages_and_csrf(client, app):
    from web.auth import get_or_create_user, set_password

    with app.extensions["mri"].session_factory() as s:
        set_password(get_or_create_user(s, "dora", "uploader"), "correct horse")
        s.commit()
    assert client.get("/").status_code == 302  # to the login page
    assert _login(client, app, "dora", "wrong").status_code == 200  # form again, with an error
    response = _login(client, app, "dora", "correct horse")
    assert response.status_code == 302 and response.headers["Location"] == "/models"
    page = client.get("/").get_data(as_text=True)
    assert "dora" in page and 'id="upload-form"' in page
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    # a cookie-authenticated POST needs the CSRF header (bearer requests do not)
    data = upload_data([("s/a.png", png_bytes())])
    refused = client.post("/api/v1/jobs", data=data)
    assert refused.status_code == 400 and refused.get_json()["error"] == "csrf_failed"
    data = upload_data([("s/a.png", png_bytes())])
    assert client.post("/api/v1/jobs", data=data, headers={"X-CSRF-Token": csrf}).status_code == 202
    client.post("/logout", data={"csrf_token": csrf})  # the logout form carries the token too
    assert client.get("/api/v1/models").status_code == 401


def test_browser_login_with_an_api_token(client, app, auth):
    token = auth("viewer")["Authorization"].split()[1]
    assert _login(client, app, "", token=token).status_code == 302
    assert client.get("/api/v1/models").status_code == 200
    assert "can read results but not upload" in client.get("/").get_data(as_text=True)


def test_login_refuses_open_redirects(client, app, auth):
    token = auth("viewer")["Authorization"].split()[1]
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"csrf_token": csrf, "token": token, "next": "//evil.example/"})
    assert response.headers["Location"] == "/"


def test_login_form_needs_its_csrf_token(client, auth):
    token = auth("viewer")["Authorization"].split()[1]
    client.get("/login")
    response = client.post("/login", data={"csrf_token": "forged", "token": token})
    assert response.status_code == 400 and "expired" in response.get_data(as_text=True)


def test_admin_issues_tokens_over_the_api(client, auth):
    response = client.post("/api/v1/tokens", json={"name": "scanner-7", "role": "uploader"}, headers=auth("admin"))
    assert response.status_code == 201
    token = response.get_json()["token"]
    assert client.post("/api/v1/jobs", data=upload_data([("a.png", png_bytes())]),
                       headers={"Authorization": f"Bearer {token}"}).status_code == 202
    assert client.post("/api/v1/tokens", json={"name": "x"}, headers=auth("reviewer")).status_code == 403
    assert client.post("/api/v1/tokens", json={"name": "x", "role": "root"}, headers=auth("admin")).status_code == 400


def test_api_token_without_role_keeps_an_existing_users_role(client, auth):
    made = client.post("/api/v1/tokens", json={"name": "ops", "role": "reviewer"}, headers=auth("admin"))
    assert made.status_code == 201 and made.get_json()["role"] == "reviewer"
    again = client.post("/api/v1/tokens", json={"name": "ops"}, headers=auth("admin"))
    assert again.status_code == 201 and again.get_json()["role"] == "reviewer"
    fresh = client.post("/api/v1/tokens", json={"name": "newbie"}, headers=auth("admin"))
    assert fresh.status_code == 201 and fresh.get_json()["role"] == "viewer"
