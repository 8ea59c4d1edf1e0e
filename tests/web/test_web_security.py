"""Browser hardening: security headers, no inline code in the pages, cookie flags, CSRF on the
logout form and on session writes, and the login rate limit (counted in Redis across processes)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from config.settings import SettingsError
from web_helpers import WEB_REDIS_URL, build_app, png_bytes, upload_data

TEMPLATES = Path(__file__).resolve().parents[2] / "web" / "templates"


def _csrf(client, url: str = "/login") -> str:
    page = client.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _login(client, token: str) -> None:
    assert client.post("/login", data={"csrf_token": _csrf(client), "token": token}).status_code == 302


def _new_app(tmp_path: Path, migrated_sqlite: Path, name: str, **overrides):
    db_file = tmp_path / f"{name}.db"
    shutil.copy(migrated_sqlite, db_file)
    return build_app(tmp_path / name, f"sqlite:///{db_file}", **overrides)


@pytest.mark.parametrize("url", ["/login", "/api/v1/models", "/healthz", "/static/style.css", "/nowhere",
                                 "/api/v1/nowhere"])
def test_security_headers_on_every_response(client, url):
    headers = client.get(url).headers
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"


def test_templates_hold_no_inline_script_or_style():
    # The CSP allows only 'self': inline code would be blocked by the browser.
    templates = sorted(TEMPLATES.glob("*.html"))
    assert len(templates) >= 6
    for template in templates:
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"inline <script> in {template.name}"
        assert not re.search(r"\sstyle\s*=|<style", text), f"inline style in {template.name}"
        assert not re.search(r"\son[a-z]+\s*=", text), f"inline event handler in {template.name}"


def test_session_cookie_is_httponly_lax_and_secure_only_when_configured(client, tmp_path, migrated_sqlite):
    cookie = client.get("/login").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    app = _new_app(tmp_path, migrated_sqlite, "secure", session_cookie_secure=True)
    cookie = app.test_client().get("/login", base_url="https://localhost").headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_logout_form_carries_a_csrf_token_and_needs_it(client, auth):
    _login(client, auth("viewer")["Authorization"].split()[1])
    page = client.get("/").get_data(as_text=True)
    form = re.search(r'<form class="logout".*?</form>', page, re.S).group(0)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post("/logout").status_code == 400  # a forged cross-site logout
    assert client.get("/api/v1/models").status_code == 200
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/api/v1/models").status_code == 401


@pytest.mark.parametrize("header", ["X-CSRFToken", "X-CSRF-Token"])
def test_session_writes_take_the_csrf_token_in_either_header(client, auth, header):
    _login(client, auth("uploader")["Authorization"].split()[1])
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)
    refused = client.post("/api/v1/jobs", data=upload_data([("a.png", png_bytes())]),
                          headers={header: "not-the-token"})
    assert refused.status_code == 400 and refused.get_json()["error"] == "csrf_failed"
    accepted = client.post("/api/v1/jobs", data=upload_data([("a.png", png_bytes())]),
                           headers={header: token})
    assert accepted.status_code == 202


def _attempt(client, accept: str = "text/html"):
    form = {"csrf_token": _csrf(client), "name": "nobody", "password": "wrong guess"}
    return client.post("/login", data=form, headers={"Accept": accept})


def test_login_attempts_are_limited_per_address(tmp_path, migrated_sqlite, broker):
    app = _new_app(tmp_path, migrated_sqlite, "limited", login_rate_limit="3 per minute")
    client = app.test_client()
    assert [_attempt(client).status_code for _ in range(3)] == [200, 200, 200]
    page = _attempt(client)
    assert page.status_code == 429 and "Too many login attempts" in page.get_data(as_text=True)
    assert page.mimetype == "text/html" and int(page.headers["Retry-After"]) > 0
    api_style = _attempt(client, accept="application/json")
    assert api_style.status_code == 429 and api_style.get_json()["error"] == "too_many_requests"
    assert client.get("/login").status_code == 200  # showing the form is not an attempt
    other_address = app.test_client()
    response = other_address.post("/login", data={"csrf_token": _csrf(other_address), "name": "x",
                                                  "password": "y"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert response.status_code == 200


def test_the_login_count_lives_in_redis_and_is_shared_by_web_processes(tmp_path, migrated_sqlite, broker):
    first = _new_app(tmp_path, migrated_sqlite, "one", login_rate_limit="2 per minute")
    second = _new_app(tmp_path, migrated_sqlite, "two", login_rate_limit="2 per minute")
    assert [_attempt(first.test_client()).status_code for _ in range(2)] == [200, 200]
    assert _attempt(second.test_client()).status_code == 429
    assert any(b"mri-login" in key for key in broker.keys("*"))


def test_without_a_redis_broker_the_count_is_kept_in_memory():
    from config.settings import Settings
    from web.security import login_limit_storage

    assert login_limit_storage(Settings(redis_url=WEB_REDIS_URL)) == WEB_REDIS_URL
    assert login_limit_storage(Settings(redis_url=WEB_REDIS_URL, broker_url="filesystem://")) == "memory://"


def test_a_malformed_login_rate_limit_stops_the_app(tmp_path, migrated_sqlite, broker):
    with pytest.raises(SettingsError, match="LOGIN_RATE_LIMIT"):
        _new_app(tmp_path, migrated_sqlite, "bad", login_rate_limit="lots")
