"""Who is calling: bearer tokens for the API, a session login for the browser, roles.

Access itself (who may call which route) is declared and enforced in web.access.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from flask import Blueprint, Response, g, redirect, render_template, request, session, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from db.models import ROLES, ApiToken, User
from web.state import db_session
# Re-exported: tests, bench and the CLI issue tokens through web.auth.
from web.tokens import check_token, issue_token, token_problem  # noqa: F401  (issue_token)

logger = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable)
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
DEFAULT_ROLE = "viewer"
LOGIN_FAILED = "Unknown name, wrong password, or an unknown, revoked or expired token."


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
    """The user owning a working (known, not revoked, not expired) token, or None."""
    return check_token(session, token).user


def current_user() -> User | None:
    """The caller (bearer token first, else the browser session), or None; cached on g.

    Sets g.auth_via ("token", "session" or None) and, for a token that does not work,
    g.auth_problem saying why (unknown, revoked, expired).
    """
    if "user" in g:
        return g.user
    user, g.auth_via, g.auth_problem = None, None, None
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        check = check_token(db_session(), header[7:].strip())
        user, g.auth_problem = check.user, check.problem
        g.auth_via = "token" if user is not None else None
    elif session.get("user_id") is not None:
        user = _session_user()
        g.auth_via = "session" if user is not None else None
    g.user = user
    return user


def _session_user() -> User | None:
    # A browser session opened with an API token lasts only while that token works.
    token_id = session.get("token_id")
    if token_id is not None:
        row = db_session().get(ApiToken, token_id)
        if row is None or token_problem(row) is not None:
            return None
    return db_session().get(User, session["user_id"])


def has_role(user: User | None, role: str) -> bool:
    """True when the user's role is at least `role`."""
    return user is not None and ROLE_RANK.get(user.role, -1) >= ROLE_RANK[role]


def require_role(role: str) -> Callable[[F], F]:
    """Mark a view with the role it expects; enforcement is web.access's, from its one table.

    The app refuses to start when a mark disagrees with web.access.ROUTE_ROLES, so a mark can
    document a view but never grant or deny anything on its own.
    """
    if role not in ROLE_RANK:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")

    def decorator(view: F) -> F:
        view.declared_role = role  # type: ignore[attr-defined]
        return view

    return decorator


def _safe_next(target: str | None) -> str:
    # Only same-site relative paths, so the login form cannot be used as an open redirect.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.upload")


def render_login(error: str = "", status: int = 200) -> tuple[str, int]:
    """The login form with an optional error (the CSRF token comes from the template)."""
    return render_template("login.html", error=error, next=request.values.get("next") or ""), status


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int]:
    """Log in with a name and password, or with an API token (CSRF and rate limit: web.security)."""
    if request.method != "POST":
        return render_login()
    user, token_row = _authenticate(request.form.get("name", "").strip(), request.form.get("password", ""),
                                    request.form.get("token", "").strip())
    if user is None:
        return render_login(LOGIN_FAILED)
    session.clear()
    session["user_id"] = user.id
    if token_row is not None:
        session["token_id"] = token_row.id
    session.permanent = True
    logger.info("user %s logged in (%s)", user.name, "token" if token_row is not None else "password")
    return redirect(_safe_next(request.values.get("next")))


def _authenticate(name: str, password: str, token: str) -> tuple[User | None, ApiToken | None]:
    session_ = db_session()
    if token:
        check = check_token(session_, token)
        return (check.user, check.row) if check.user is not None else (None, None)
    if not name or not password:
        return None, None
    user = session_.scalar(select(User).where(User.name == name))
    if user is None or not user.password_hash or not check_password_hash(user.password_hash, password):
        return None, None
    return user, None


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    """End the browser session."""
    session.clear()
    return redirect(url_for("auth.login"))
