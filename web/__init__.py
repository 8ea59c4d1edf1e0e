"""The web process: upload API, status and results, model versions, login pages, CLI.

`flask --app web ...` finds `create_app` here; tests call it with overrides.
"""
from __future__ import annotations

import logging
import tempfile
import time
from typing import IO, Any, Mapping

from flask import Flask, Request, current_app, g, request

logger = logging.getLogger(__name__)
# Caps each non-file form field (a `paths` value). Werkzeug also applies it to its parse
# buffer (read in 64 KiB chunks), so it must stay well above that or real uploads get 413.
MAX_FORM_FIELD_BYTES = 1024 * 1024
SPOOL_IN_MEMORY_BYTES = 512 * 1024


class UploadRequest(Request):
    """A request whose uploaded files spool to DATA_DIR/tmp, never to the system temp folder."""

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES, mode="rb+",
                                             dir=current_app.config["UPLOAD_TMP_DIR"])


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(level)


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app from the environment plus `overrides` (Settings field names)."""
    from config.settings import load_settings
    from web import access, apidocs, auth, cli, errors, monitoring, pages, security, state
    from web.api import load_routes
    from web.validation import refuse_out_of_range_ids

    settings = load_settings(overrides=overrides)
    _configure_logging(settings.log_level)
    tmp_dir = settings.data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__)
    app.request_class = UploadRequest
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        MAX_FORM_MEMORY_SIZE=MAX_FORM_FIELD_BYTES,
        # a folder upload sends a file part and a path part per file
        MAX_FORM_PARTS=2 * settings.max_zip_files + 16,
        UPLOAD_TMP_DIR=str(tmp_dir),
        TESTING=settings.env == "test",
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    _log_requests(app)
    state.init_app(app, settings)
    errors.register(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(load_routes())
    app.register_blueprint(monitoring.bp)
    app.register_blueprint(apidocs.bp)
    security.init_app(app, settings)  # after the blueprints: it wraps the login view in its rate limit
    access.init_app(app)
    app.before_request(refuse_out_of_range_ids)  # after the access guard: 401/403 come first
    cli.register(app)
    logger.debug("web app created (env=%s, data_dir=%s)", settings.env, settings.data_dir)
    return app


def _log_requests(app: Flask) -> None:
    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _log(response):
        elapsed_ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        logger.debug("%s %s -> %s in %.1f ms", request.method, request.path, response.status_code, elapsed_ms)
        return response
