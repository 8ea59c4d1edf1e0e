"""API bearer tokens: issue (stored as SHA-256 only), check (revoked, expired), find, revoke, describe."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from db.base import utcnow
from db.models import ApiToken, AuditEvent, User
from web.serialize import iso

TOKEN_BYTES = 32
TOKEN_PREFIX_LEN = 8
MAX_EXPIRY_DAYS = 3650
# Writing last_used on every poll would turn reads into writes; once in a while is enough.
LAST_USED_RESOLUTION = timedelta(minutes=5)


class TokenNotFound(LookupError):
    """No single token matches a reference (id, prefix or token); the message says why."""


@dataclass(frozen=True)
class TokenCheck:
    """The outcome of checking a presented token: its owner, or the reason it does not work."""

    user: User | None
    row: ApiToken | None
    problem: str | None


def new_token() -> str:
    """A random URL-safe token that never starts with '-', so no CLI can mistake it for an option."""
    while True:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if not token.startswith("-"):
            return token


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a bearer token (the only form stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def create_token(session: Session, user: User, *, expires_in_days: int | None = None,
                 actor: User | None = None, via: str = "cli") -> tuple[ApiToken, str]:
    """Add a token row for `user` (audited) and return it with the token in clear (shown once)."""
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
        raise ValueError(f"expires_in_days must be between 1 and {MAX_EXPIRY_DAYS}")
    token = new_token()
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:TOKEN_PREFIX_LEN],
                   expires=expires)
    session.add(row)
    session.flush()
    session.add(AuditEvent(user_id=(actor or user).id, action="token.create", target=f"user:{user.name}",
                           detail={"token_id": row.id, "prefix": row.prefix, "expires": iso(expires),
                                   "via": via}))
    return row, token


def issue_token(session: Session, user: User, expires_in_days: int | None = None) -> str:
    """Create a new bearer token for a user and return it in clear (shown once)."""
    return create_token(session, user, expires_in_days=expires_in_days)[1]


def token_problem(row: ApiToken, now: datetime | None = None) -> str | None:
    """Why a stored token no longer works (revoked or expired), or None when it does."""
    if row.revoked:
        return f"the bearer token {row.prefix}... was revoked"
    expires = _aware(row.expires)
    if expires is not None and expires <= (now or utcnow()):
        return f"the bearer token {row.prefix}... expired at {iso(expires)}; ask an admin for a new one"
    return None


def check_token(session: Session, token: str) -> TokenCheck:
    """Look a presented token up by its hash; note when it was last used."""
    # The owner comes in the same query: every API request (each status poll) checks a token.
    row = session.scalar(select(ApiToken).options(joinedload(ApiToken.user))
                         .where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        return TokenCheck(None, None, "the bearer token is unknown")
    problem = token_problem(row)
    if problem is not None:
        return TokenCheck(None, row, problem)
    now = utcnow()
    last = _aware(row.last_used)
    if last is None or now - last > LAST_USED_RESOLUTION:
        row.last_used = now
        session.commit()
    return TokenCheck(row.user, row, None)


def find_token(session: Session, ref: str) -> ApiToken:
    """The one token a reference names: the token itself, its id, or its 8-character prefix (as listed)."""
    ref = ref.strip()
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(ref))) if ref else None
    if row is None and ref.isdigit():
        row = session.get(ApiToken, int(ref))
    if row is not None:
        return row
    matches = session.scalars(select(ApiToken).where(ApiToken.prefix == ref).order_by(ApiToken.id)).all()
    if len(matches) == 1:
        return matches[0]
    shown = ref if len(ref) <= TOKEN_PREFIX_LEN else ref[:TOKEN_PREFIX_LEN] + "..."
    if matches:
        raise TokenNotFound(f"prefix {shown!r} matches tokens {', '.join(str(m.id) for m in matches)}; "
                            "give the id")
    raise TokenNotFound(f"no token has the id, prefix ({TOKEN_PREFIX_LEN} characters) or value {shown!r}")


def revoke(session: Session, row: ApiToken, *, actor: User | None = None, via: str = "cli") -> bool:
    """Revoke a token (audited); False when it was already revoked."""
    if row.revoked:
        return False
    row.revoked = True
    session.add(AuditEvent(user_id=actor.id if actor else None, action="token.revoke",
                           target=f"token:{row.id}",
                           detail={"user": row.user.name, "prefix": row.prefix, "via": via}))
    return True


def token_json(row: ApiToken) -> dict[str, Any]:
    """What GET /api/v1/tokens shows of a token: never the token or its hash."""
    return {"id": row.id, "user": row.user.name, "role": row.user.role, "prefix": row.prefix,
            "created": iso(row.created), "last_used": iso(row.last_used), "expires": iso(row.expires),
            "revoked": row.revoked, "active": token_problem(row) is None}
