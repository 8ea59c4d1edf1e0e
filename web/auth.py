"""Who is calling: bearer tokens (stored as SHA-256) for the API, a session login for the browser, roles."""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from datetime import timedelta
from typing import Callable, TypeVar

from flask import (Blueprint, Response, g, redirect, render_template, request, session,
                   url_for)
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from db.base import utcnow
from db.models import ROLES, ApiToken, AuditEvent, User
from web.errors import ApiError, wants_json
from web.state import db_session

logger = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable)
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
TOKEN_PREFIX_LEN = 8
# Writing last_used on every poll would turn reads into writes; once in a while is enough.
LAST_USED_RESOLUTION = timedelta(minutes=5)
CSRF_HEADER = "X-CSRF-Token"
DEFAULT_ROLE = "viewer"


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a bearer token (the only form stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, user: User) -> str:
    """Create a new bearer token for a user and return it in clear (shown once)."""
    token = secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:TOKEN_PREFIX_LEN]))
    session.add(AuditEvent(user_id=user.id, action="token.create", target=f"user:{user.name}"))
    return token


def get_or_create_user(session: Session, name: str, role: str | None = None) -> User:
    """The user with this name, created if missing (as viewer unless `role` says otherwise).

    An existing user's role changes only when `role` is given, so issuing another token for
    "admin" without naming a role cannot demote the admin.
    """
    if role is not None and role not in ROLE_RANK:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, role=role or DEFAULT_ROLE)
        session.add(user)
        session.flush()
    elif role is not None:
        user.role = role
    return user


def set_password(user: User, password: str) -> None:
    """Store a salted hash of the user's password."""
    user.password_hash = generate_password_hash(password)


def user_for_token(session: Session, token: str) -> User | None:
    """The user owning a valid (not revoked) token, or None."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token),
                                                ApiToken.revoked.is_(False)))
    if row is None:
        return None
    now = utcnow()
    last = row.last_used
    if last is not None and last.tzinfo is None:  # SQLite returns naive datetimes
        last = last.replace(tzinfo=now.tzinfo)
    if last is None or now - last > LAST_USED_RESOLUTION:
        row.last_used = now
        session.commit()
    return row.user


def current_user() -> User | None:
    """The caller: bearer token first, else the browser session; cached on g."""
    if "user" in g:
        return g.user
    user = None
    g.auth_via = None
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        user = user_for_token(db_session(), header[7:].strip())
        if user is None:
            raise ApiError(401, "unauthorized", "the bearer token is unknown or revoked")
        g.auth_via = "token"
    elif session.get("user_id") is not None:
        user = db_session().get(User, session["user_id"])
        g.auth_via = "session" if user is not None else None
    g.user = user
    return user


def has_role(user: User | None, role: str) -> bool:
    """True when the user's role is at least `role`."""
    return user is not None and ROLE_RANK.get(user.role, -1) >= ROLE_RANK[role]


def csrf_token() -> str:
    """The session's CSRF token, created on first use (pages put it in forms and fetch headers)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def _check_csrf() -> None:
    # Bearer tokens are not sent automatically by browsers, so only cookie sessions need this.
    if request.method in ("GET", "HEAD", "OPTIONS") or g.get("auth_via") != "session":
        return
    sent = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token", "")
    if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
        raise ApiError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} for a browser-session request")


def require_role(role: str) -> Callable[[F], F]:
    """Decorator: 401 without credentials, 403 when the role is below `role`; pages redirect to login."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user is None:
                if not wants_json():
                    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
                raise ApiError(401, "unauthorized",
                               "send Authorization: Bearer <token> (see `flask --app web create-token`)")
            if not has_role(user, role):
                raise ApiError(403, "forbidden", f"this needs the {role} role; you are {user.role}")
            _check_csrf()
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def _safe_next(target: str | None) -> str:
    # Only same-site relative paths, so the login form cannot be used as an open redirect.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.upload")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    """Log in with a name and password, or with an API token."""
    error = ""
    next_url = request.values.get("next")
    if request.method == "POST":
        if not hmac.compare_digest(request.form.get("csrf_token", ""), session.get("csrf", "")):
            error = "The form expired; please try again."
        else:
            user = _authenticate(request.form.get("name", "").strip(), request.form.get("password", ""),
                                 request.form.get("token", "").strip())
            if user is None:
                error = "Unknown name, wrong password or unknown token."
            else:
                session.clear()
                session["user_id"] = user.id
                session.permanent = True
                logger.info("user %s logged in", user.name)
                return redirect(_safe_next(next_url))
    return render_template("login.html", error=error, next=next_url or "", csrf=csrf_token())


def _authenticate(name: str, password: str, token: str) -> User | None:
    session_ = db_session()
    if token:
        return user_for_token(session_, token)
    if not name or not password:
        return None
    user = session_.scalar(select(User).where(User.name == name))
    if user is None or not user.password_hash or not check_password_hash(user.password_hash, password):
        return None
    return user


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    """End the browser session."""
    session.clear()
    return redirect(url_for("auth.login"))
