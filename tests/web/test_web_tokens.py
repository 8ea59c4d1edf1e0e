"""Tokens: never a leading dash, optional expiry, listed without secrets, revocable (API, CLI), audited."""
from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from db.base import utcnow
from db.models import ApiToken, AuditEvent
from web.tokens import hash_token, new_token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _expire(app, token: str) -> None:
    with app.extensions["mri"].session_factory() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        row.expires = utcnow() - timedelta(seconds=1)
        s.commit()


def _audit(app, action: str) -> list[AuditEvent]:
    with app.extensions["mri"].session_factory() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def test_tokens_never_start_with_a_dash():
    # token_urlsafe starts with '-' one time in 64: 3,000 draws would all but surely show one.
    tokens = [new_token() for _ in range(3000)]
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == 3000 and min(map(len, tokens)) >= 43


def test_cli_token_with_expiry_works_until_it_expires(app, client):
    result = app.test_cli_runner().invoke(args=["create-token", "temp", "--role", "viewer",
                                                "--expires-in-days", "2"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert "expires 20" in result.output
    with app.extensions["mri"].session_factory() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        left = row.expires.replace(tzinfo=utcnow().tzinfo) - utcnow()
        assert timedelta(days=2) - timedelta(minutes=1) < left <= timedelta(days=2)
    assert client.get("/api/v1/models", headers=_bearer(token)).status_code == 200
    _expire(app, token)
    response = client.get("/api/v1/models", headers=_bearer(token))
    assert response.status_code == 401 and "expired" in response.get_json()["detail"]
    bad = app.test_cli_runner().invoke(args=["create-token", "temp", "--expires-in-days", "0"])
    assert bad.exit_code != 0


def test_api_token_with_expiry(client, auth, app):
    made = client.post("/api/v1/tokens", json={"name": "scanner", "role": "uploader", "expires_in_days": 30},
                       headers=auth("admin"))
    assert made.status_code == 201, made.get_json()
    body = made.get_json()
    assert body["expires"] and body["prefix"] == body["token"][:8] and body["id"]
    assert client.get("/api/v1/jobs/1", headers=_bearer(body["token"])).status_code == 404  # works
    _expire(app, body["token"])
    assert "expired" in client.get("/api/v1/jobs/1", headers=_bearer(body["token"])).get_json()["detail"]
    for days in (0, -1, 1.5, "7", True, 10_000):
        bad = client.post("/api/v1/tokens", json={"name": "x", "expires_in_days": days},
                          headers=auth("admin"))
        assert bad.status_code == 400 and "expires_in_days" in bad.get_json()["detail"], days


def test_listing_shows_tokens_but_never_their_secret(client, auth, app):
    admin = auth("admin")
    viewer_token = auth("viewer")["Authorization"].split()[1]
    client.get("/api/v1/models", headers=_bearer(viewer_token))
    response = client.get("/api/v1/tokens", headers=admin)
    assert response.status_code == 200
    listed = {t["user"]: t for t in response.get_json()["tokens"]}
    assert set(listed) == {"admin-user", "viewer-user"}
    viewer = listed["viewer-user"]
    assert set(viewer) == {"id", "user", "role", "prefix", "created", "last_used", "expires", "revoked",
                           "active"}
    assert viewer["prefix"] == viewer_token[:8] and viewer["last_used"] and viewer["expires"] is None
    assert viewer["revoked"] is False and viewer["active"] is True
    text = response.get_data(as_text=True)
    for token in (viewer_token, admin["Authorization"].split()[1]):
        assert token not in text and hash_token(token) not in text


def test_admin_revokes_a_token_over_the_api(client, auth, app):
    viewer_token = auth("viewer")["Authorization"].split()[1]
    listed = client.get("/api/v1/tokens", headers=auth("admin")).get_json()["tokens"]
    token_id = next(t["id"] for t in listed if t["user"] == "viewer-user")
    response = client.delete(f"/api/v1/tokens/{token_id}", headers=auth("admin"))
    assert response.status_code == 200
    assert response.get_json()["token"]["revoked"] is True and response.get_json()["revoked_now"] is True
    refused = client.get("/api/v1/models", headers=_bearer(viewer_token))
    assert refused.status_code == 401 and "revoked" in refused.get_json()["detail"]
    again = client.delete(f"/api/v1/tokens/{token_id}", headers=auth("admin"))
    assert again.status_code == 200 and again.get_json()["revoked_now"] is False
    assert client.delete("/api/v1/tokens/99999", headers=auth("admin")).status_code == 404
    (event,) = _audit(app, "token.revoke")
    assert event.target == f"token:{token_id}" and event.detail["via"] == "api" and event.user_id is not None


def _cli_token(app, name: str) -> str:
    result = app.test_cli_runner().invoke(args=["create-token", name, "--role", "uploader"])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_cli_revokes_by_token_prefix_or_id(app, client):
    runner = app.test_cli_runner()
    by_value, by_prefix, by_id = (_cli_token(app, n) for n in ("a", "b", "c"))
    with app.extensions["mri"].session_factory() as s:
        id_of_c = s.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(by_id)))
    for ref in (by_value, by_prefix[:8], str(id_of_c)):
        result = runner.invoke(args=["revoke-token", ref])
        assert result.exit_code == 0 and result.output.startswith("revoked token"), result.output
    for token in (by_value, by_prefix, by_id):
        assert client.get("/api/v1/models", headers=_bearer(token)).status_code == 401
    assert "already revoked" in runner.invoke(args=["revoke-token", str(id_of_c)]).output
    assert [e.detail["via"] for e in _audit(app, "token.revoke")] == ["cli"] * 3
    unknown = runner.invoke(args=["revoke-token", "nosuchtk"])
    assert unknown.exit_code != 0 and "no token" in unknown.output


def test_cli_refuses_an_ambiguous_prefix(app):
    _cli_token(app, "twin")
    _cli_token(app, "twin")
    with app.extensions["mri"].session_factory() as s:
        for row in s.scalars(select(ApiToken)):
            row.prefix = "samepref"  # two tokens whose first 8 characters agree
        s.commit()
    result = app.test_cli_runner().invoke(args=["revoke-token", "samepref"])
    assert result.exit_code != 0 and re.search(r"matches tokens \d+, \d+; give the id", result.output)


def test_browser_session_opened_with_a_token_ends_when_it_is_revoked(app, client, auth):
    token = auth("viewer")["Authorization"].split()[1]
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/login", data={"csrf_token": csrf, "token": token}).status_code == 302
    assert client.get("/api/v1/models").status_code == 200
    assert app.test_cli_runner().invoke(args=["revoke-token", token[:8]]).exit_code == 0
    assert client.get("/api/v1/models").status_code == 401
    assert client.get("/").status_code == 302
