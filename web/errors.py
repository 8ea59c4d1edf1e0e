"""JSON errors `{"error", "detail"}` for the API; short plain pages for the browser; never a traceback."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from markupsafe import escape
from sqlalchemy.exc import InterfaceError, OperationalError, TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)
JSON_PREFIXES = ("/api/", "/metrics", "/healthz")
# What SQLAlchemy raises when the database cannot be reached, drops the connection or the
# pool is exhausted: a passing condition, answered 503 so clients retry.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
DATABASE_RETRY_AFTER_S = 10


class ApiError(Exception):
    """An error answered as JSON with a status, a short code and a plain explanation."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def error_code(status: int, name: str) -> str:
    """A snake_case code for an HTTP status name, e.g. 'Request Entity Too Large' -> 'payload_too_large'."""
    if status == 413:
        return "payload_too_large"
    return name.lower().replace(" ", "_").replace("'", "")


def json_error(status: int, error: str, detail: str) -> Response:
    """A JSON error response."""
    response = jsonify(error=error, detail=detail)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="mri"'
    return response


def plain_page(status: int, text: str) -> Response:
    """A minimal HTML page for browsers (no template, so it renders even with the database down)."""
    body = f"<!doctype html><title>{status}</title><p>{escape(text)}</p>\n"
    return Response(body, status=status, mimetype="text/html")


def wants_json() -> bool:
    """True for API paths and for clients that ask for JSON."""
    if request.path.startswith(JSON_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def register(app: Flask) -> None:
    """Install the error handlers."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        if not wants_json():
            return plain_page(exc.status, exc.detail)
        return json_error(exc.status, exc.error, exc.detail)

    def _database_down(exc: Exception):
        first_line = (str(exc).strip().splitlines() or [""])[0]
        logger.warning("database unavailable on %s %s: %s: %s", request.method, request.path,
                       exc.__class__.__name__, first_line)
        detail = "the database cannot be reached right now; try again shortly"
        response = json_error(503, "database_unavailable", detail) if wants_json() else \
            plain_page(503, f"Service unavailable: {detail}.")
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
        return response

    for exc_class in DATABASE_DOWN:
        app.register_error_handler(exc_class, _database_down)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if not wants_json():
            return exc
        status = exc.code or 500
        detail = exc.description or exc.name
        if status == 413:
            detail = (f"the request is larger than MAX_UPLOAD_MB "
                      f"({app.config['MAX_CONTENT_LENGTH'] // (1024 * 1024)} MB); "
                      "send the folder in several requests (open=1, then /files and /close)")
        return json_error(status, error_code(status, exc.name), detail)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.path)
        if not wants_json():
            return "Internal server error", 500
        return json_error(500, "internal_error", "an unexpected error occurred; see the server log")
