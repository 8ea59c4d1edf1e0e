"""Helpers of the client's tests (a module of its own: conftest modules of several folders share a
name): serving the app in a thread, and a proxy that counts requests and can cut connections."""
from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from werkzeug.serving import make_server


def serve(app) -> tuple[Any, threading.Thread]:
    """Serve a WSGI app on a free loopback port in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # a short poll interval: shutdown() waits for the loop to notice, 0.5 s by default
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


class Proxy:
    """An HTTP proxy to the service that records every request and can cut the connection of
    upload requests (as a network that goes away would) once `uploads_allowed` is used up."""

    def __init__(self, upstream: str) -> None:
        """Start on a free loopback port."""
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.requests: list[tuple[str, str, int]] = []  # (method, path, file parts in the body)
        self.uploads_allowed: int | None = None
        self.answer_503 = 0  # answer this many next requests 503 without passing them on
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upload = self.command == "POST" and (self.path.startswith("/api/v1/jobs?")
                                                     or self.path.endswith("/files"))
                with proxy.lock:
                    if proxy.answer_503 > 0:
                        proxy.answer_503 -= 1
                        proxy.requests.append((self.command, self.path, 0))
                        self.send_response(503)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Retry-After", "0")
                        payload = b'{"error": "database_unavailable", "detail": "try again shortly"}'
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    if upload and proxy.uploads_allowed is not None:
                        if proxy.uploads_allowed <= 0:
                            self.close_connection = True
                            self.connection.close()  # no answer at all: the network went away
                            return
                        proxy.uploads_allowed -= 1
                    proxy.requests.append((self.command, self.path, body.count(b'name="files"')))
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            do_GET = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def files_sent(self) -> int:
        """File parts in the upload requests that reached the service."""
        return sum(parts for _, _, parts in self.requests)

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
