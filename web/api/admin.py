"""Admin-only API: issue, list and revoke bearer tokens (the CLI does the same from a shell)."""
from __future__ import annotations

from flask import Response, jsonify
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from db.models import ROLES, ApiToken
from web.api import bp
from web.auth import current_user, get_or_create_user
from web.errors import ApiError
from web.state import db_session, get_or_404
from web import tokens
from web.validation import json_object, no_body

TOKEN_FIELDS = ("name", "role", "expires_in_days")
USAGE = 'send JSON {"name": "...", "role": "viewer|uploader|reviewer|admin", "expires_in_days": N}'


def _expiry_days(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= tokens.MAX_EXPIRY_DAYS:
        raise ApiError(400, "bad_body", f"expires_in_days must be a whole number of days from 1 to "
                                        f"{tokens.MAX_EXPIRY_DAYS} (or absent: the token does not expire)")
    return value


@bp.post("/tokens")
def create_token() -> tuple[Response, int]:
    """Create user `name` if needed (new users: role `role`, default viewer) and return a new token once.

    An existing user's role changes only when the body names one.
    """
    body = json_object(TOKEN_FIELDS)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "bad_body", USAGE)
    role = body.get("role")
    if role is not None and role not in ROLES:
        raise ApiError(400, "bad_body", f"role must be one of {', '.join(ROLES)}")
    days = _expiry_days(body.get("expires_in_days"))
    session = db_session()
    user = get_or_create_user(session, name.strip()[:120], role)
    row, token = tokens.create_token(session, user, expires_in_days=days, actor=current_user(), via="api")
    session.commit()
    return jsonify(id=row.id, name=user.name, role=user.role, token=token, prefix=row.prefix,
                   expires=tokens.token_json(row)["expires"]), 201


@bp.get("/tokens")
def list_tokens() -> Response:
    """Every token, newest first: id, user, prefix, created, last used, expiry, revoked (never the token)."""
    rows = db_session().scalars(select(ApiToken).options(selectinload(ApiToken.user))
                                .order_by(ApiToken.id.desc())).all()
    return jsonify(tokens=[tokens.token_json(r) for r in rows])


@bp.delete("/tokens/<int:token_id>")
def revoke_token(token_id: int) -> Response:
    """Revoke a token (audited); revoking it again changes nothing."""
    no_body()
    session = db_session()
    row = get_or_404(ApiToken, token_id, "token")
    changed = tokens.revoke(session, row, actor=current_user(), via="api")
    session.commit()
    return jsonify(token=tokens.token_json(row), revoked_now=changed)
