"""Helpers of the client's tests (a module of its own: conftest modules of several folders share a name)."""
from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import make_server


def serve(app) -> tuple[Any, threading.Thread]:
    """Serve a WSGI app on a free loopback port in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
