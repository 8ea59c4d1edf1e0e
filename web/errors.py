"""JSON errors `{"error", "detail"}` for the API; HTML stays Flask's default for pages."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)
JSON_PREFIXES = ("/api/", "/metrics", "/healthz")


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
        return json_error(exc.status, exc.error, exc.detail)

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
