"""Every route of the app's URL map against the one declared role table (web.access.ROUTE_ROLES).

Each route is called with no credentials, a revoked token and each role, by bearer token
and by browser session; a route missing from the table fails here and is refused at run time.
"""
from __future__ import annotations

import re
from typing import Iterator

import pytest
from flask import jsonify

from db.models import ROLES, ApiToken
from web.access import PUBLIC, ROUTE_ROLES, SAFE_METHODS, table_problems
from web.auth import require_role
from web.errors import JSON_PREFIXES
from web_helpers import build_app

RANK = {role: i for i, role in enumerate(ROLES)}
# Placeholder values per URL variable: ids that do not exist (404 is fine: it is past the guard).
URL_VALUES = {"filename": "style.css"}
ABSENT_ID = 999_999


@pytest.fixture()
def app(tmp_path, migrated_sqlite, broker):
    """The web app with a login limit high enough for the many logins of a walk."""
    import shutil

    db_file = tmp_path / "service.db"
    shutil.copy(migrated_sqlite, db_file)
    application = build_app(tmp_path, f"sqlite:///{db_file}", login_rate_limit="10000 per minute")
    yield application
    application.extensions["mri"].engine.dispose()


def routes(app) -> Iterator[tuple[str, str, str]]:
    """(endpoint, method, url) for every rule and method of the URL map (HEAD/OPTIONS are Flask's)."""
    adapter = app.url_map.bind("localhost")
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        values = {name: URL_VALUES.get(name, ABSENT_ID) for name in rule.arguments}
        url = adapter.build(rule.endpoint, values)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, url


def is_page(url: str) -> bool:
    return not url.startswith(JSON_PREFIXES)


def _session_csrf(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def _login_session(client, token: str) -> str:
    """Log the client in through the form with an API token; return the session's CSRF token."""
    response = client.post("/login", data={"csrf_token": _session_csrf(client), "token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return _session_csrf(client)


def _call(client, method: str, url: str, headers: dict[str, str]):
    return client.open(url, method=method, headers=headers)


def test_every_route_is_in_the_table_and_every_entry_is_a_route(app):
    assert table_problems(app) == []


def test_no_credentials_and_a_revoked_token(app, client, auth):
    revoked = auth("admin")
    with app.extensions["mri"].session_factory() as s:
        for row in s.query(ApiToken):
            row.revoked = True
        s.commit()
    for credentials in ({}, revoked):
        for endpoint, method, url in routes(app):
            response = _call(client, method, url, credentials)
            where = f"{method} {url} ({endpoint}) with {'a revoked token' if credentials else 'nothing'}"
            if ROUTE_ROLES[endpoint] == PUBLIC:
                assert response.status_code not in (401, 403), where
            elif is_page(url):
                assert response.status_code == 302 and "/login" in response.headers["Location"], where
            else:
                assert response.status_code == 401, where
                assert response.get_json()["error"] == "unauthorized", where
                if credentials:
                    assert "revoked" in response.get_json()["detail"], where


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("via", ["token", "session"])
def test_each_role(app, client, auth, role, via):
    headers = auth(role)
    csrf = ""
    if via == "session":
        csrf = _login_session(client, headers["Authorization"].split()[1])
        headers = {}
    walk = sorted(routes(app), key=lambda r: r[0] == "auth.logout")  # logging out last
    for endpoint, method, url in walk:
        send = dict(headers)
        if via == "session" and method not in SAFE_METHODS:
            send["X-CSRFToken"] = csrf
        response = _call(client, method, url, send)
        needed = ROUTE_ROLES[endpoint]
        where = f"{method} {url} ({endpoint}) as {role} by {via}: {response.status_code}"
        if needed != PUBLIC and RANK[role] < RANK[needed]:
            assert response.status_code == 403, where
            assert response.get_json()["error"] == "forbidden" and needed in response.get_json()["detail"]
        else:
            assert response.status_code not in (401, 403), where
            assert not (response.is_json and response.get_json().get("error") == "csrf_failed"), where


def test_every_state_changing_route_needs_csrf_from_a_browser_session(app, client, auth):
    _login_session(client, auth("admin")["Authorization"].split()[1])
    writes = [(e, m, u) for e, m, u in routes(app) if m not in SAFE_METHODS]
    assert len(writes) >= 8
    for endpoint, method, url in writes:
        response = _call(client, method, url, {})
        where = f"{method} {url} ({endpoint}) without a CSRF token"
        assert response.status_code == 400, where
        if not is_page(url):
            assert response.get_json()["error"] == "csrf_failed", where
    assert client.get("/api/v1/models").status_code == 200  # the session survived the forged logout


def test_a_route_missing_from_the_table_is_refused_and_reported(app, auth):
    app.add_url_rule("/api/v1/forgotten", "api.forgotten", lambda: jsonify(ok=True))
    assert table_problems(app) == ["api.forgotten: not in web.access.ROUTE_ROLES (refused until it is)"]
    response = app.test_client().get("/api/v1/forgotten", headers=auth("admin"))
    assert response.status_code == 403 and "no declared access rule" in response.get_json()["detail"]


def test_a_require_role_mark_that_contradicts_the_table_stops_the_app(app):
    from web import access

    @require_role("viewer")
    def tokens_for_everyone():
        return jsonify(ok=True)

    app.view_functions["api.list_tokens"] = tokens_for_everyone
    assert table_problems(app) == [
        "api.list_tokens: marked require_role('viewer') but ROUTE_ROLES says 'admin'"]
    with pytest.raises(RuntimeError, match="disagree"):
        access.init_app(app)
