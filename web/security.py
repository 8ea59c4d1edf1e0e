"""Browser hardening: CSRF (Flask-WTF), login rate limit (Flask-Limiter), cookie flags, security headers."""
from __future__ import annotations

import logging

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from limits import parse_many

from config.settings import Settings, SettingsError
from web.auth import render_login
from web.errors import json_error, plain_page, wants_json

logger = logging.getLogger(__name__)
# Only the app's own origin: scripts and styles come from /static (no inline code), nothing
# may frame the pages, and forms post only back to the app.
CONTENT_SECURITY_POLICY = ("default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin keeps the Referer on the app's own requests: Flask-WTF's CSRF check over
    # HTTPS requires it, while other sites never learn the app's paths (job ids, filters).
    "Referrer-Policy": "same-origin",
}
LOGIN_LIMIT_PREFIX = "mri-login"
TOO_MANY_LOGINS = "Too many login attempts from your address; wait a minute and try again."


def login_limit_storage(settings: Settings) -> str:
    """Where login attempts are counted: Redis (REDIS_URL) when the broker is Redis, else memory.

    Every web process (gunicorn workers, several hosts) then shares one count per address;
    without Redis (the filesystem broker of `make run`) each process counts on its own.
    """
    if settings.celery_broker_url.startswith(("redis://", "rediss://")):
        return settings.redis_url
    return "memory://"


def init_app(app: Flask, settings: Settings) -> None:
    """Cookie flags, CSRF (checked by web.access.guard), the login rate limit and security headers."""
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        # web.access.guard calls protect() itself, after authentication, and skips bearer requests.
        WTF_CSRF_CHECK_DEFAULT=False,
        # The token is bound to the session; a page left open for hours must still upload.
        WTF_CSRF_TIME_LIMIT=None,
    )
    CSRFProtect(app)
    _limit_logins(app, settings)
    app.register_error_handler(CSRFError, _csrf_failed)
    app.register_error_handler(RateLimitExceeded, _too_many_requests)
    app.after_request(_add_security_headers)


def _limit_logins(app: Flask, settings: Settings) -> None:
    try:
        parse_many(settings.login_rate_limit)
    except ValueError as exc:
        raise SettingsError(f"LOGIN_RATE_LIMIT is not a rate limit like '10 per minute': {exc}") from None
    storage = login_limit_storage(settings)
    limiter = Limiter(get_remote_address, storage_uri=storage, strategy="moving-window",
                      key_prefix=f"{settings.broker_key_prefix}{LOGIN_LIMIT_PREFIX}", headers_enabled=True,
                      # a Redis outage must not lock everyone out: count in memory meanwhile
                      in_memory_fallback_enabled=True)
    limiter.init_app(app)
    # One limiter per app (its storage is per instance), so the limit wraps the registered view.
    app.view_functions["auth.login"] = limiter.limit(settings.login_rate_limit, methods=["POST"])(
        app.view_functions["auth.login"])
    logger.debug("login attempts limited to %s per address (%s)", settings.login_rate_limit,
                 storage.split("://", 1)[0])


def _csrf_failed(exc: CSRFError) -> Response | tuple[str, int]:
    logger.info("CSRF check failed on %s %s: %s", request.method, request.path, exc.description)
    if request.endpoint == "auth.login" and not wants_json():
        return render_login("The form expired; please try again.", 400)
    detail = f"{exc.description} Send the page's CSRF token as X-CSRFToken (or the csrf_token form field)."
    if wants_json():
        return json_error(400, "csrf_failed", detail)
    return plain_page(400, detail)


def _too_many_requests(exc: RateLimitExceeded) -> Response | tuple[str, int]:
    if wants_json():
        return json_error(429, "too_many_requests", f"{TOO_MANY_LOGINS} (limit: {exc.description})")
    return render_login(TOO_MANY_LOGINS, 429)


def _add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
