"""Admin-only API: issue bearer tokens (the CLI `create-token` does the same from a shell)."""
from __future__ import annotations

from flask import Response, jsonify, request

from db.models import ROLES
from web.api import bp
from web.auth import get_or_create_user, issue_token, require_role
from web.errors import ApiError
from web.state import db_session


@bp.post("/tokens")
@require_role("admin")
def create_token() -> tuple[Response, int]:
    """Create user `name` if needed (new users: role `role`, default viewer) and return a new token once.

    An existing user's role changes only when the body names one.
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"].strip():
        raise ApiError(400, "bad_body", 'send JSON {"name": "...", "role": "viewer|uploader|reviewer|admin"}')
    role = body.get("role")
    if role is not None and role not in ROLES:
        raise ApiError(400, "bad_body", f"role must be one of {', '.join(ROLES)}")
    session = db_session()
    user = get_or_create_user(session, body["name"].strip()[:120], role)
    token = issue_token(session, user)
    session.commit()
    return jsonify(name=user.name, role=user.role, token=token), 201
