"""HTTP to the service: bearer token, retries with backoff, and errors turned into plain messages."""
from __future__ import annotations

import random
import time
from typing import Any, Callable

import requests
from urllib3.exceptions import NewConnectionError

from client import __version__

# Worth another try: the service is busy or restarting, or a proxy in front of it is.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Safe to retry even when the request may have been processed: the service did not process it.
RETRY_STATUSES_UNSAFE = frozenset({429, 503})
MAX_DELAY_S = 30.0


class ApiError(Exception):
    """The service answered an error: status, its `error` code and `detail` sentence."""

    def __init__(self, status: int, error: str, detail: str, method: str, url: str) -> None:
        super().__init__(f"{method} {url}: {status} {error}: {detail}")
        self.status, self.error, self.detail, self.method, self.url = status, error, detail, method, url


class NetworkError(Exception):
    """The service could not be reached (after the retries)."""


def _error_of(response: requests.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return str(body["error"]), str(body.get("detail", ""))
    text = " ".join(response.text.split())[:200]
    return response.reason.lower().replace(" ", "_") if response.reason else "error", text


def _nothing_sent(exc: requests.RequestException) -> bool:
    """True when the connection was never made, so the service cannot have seen the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


class Api:
    """A session on one service: every call carries the token and retries passing failures."""

    def __init__(self, url: str, token: str, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 300.0,
                 say: Callable[[str], None] = lambda _: None) -> None:
        """`say` receives a line for each retry (the CLI prints it to stderr)."""
        self.url, self.retries, self.backoff_s, self.timeout_s, self.say = url, retries, backoff_s, timeout_s, say
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json",
                                     "User-Agent": f"mri-classify/{__version__}"})
        self.requests_sent = 0

    def _delay(self, attempt: int, response: requests.Response | None) -> float:
        if response is not None and response.headers.get("Retry-After", "").isdigit():
            return min(float(response.headers["Retry-After"]), MAX_DELAY_S)
        return min(self.backoff_s * 2 ** attempt, MAX_DELAY_S) * (0.5 + random.random() / 2)

    def request(self, method: str, path: str, *, idempotent: bool = True, ok: tuple[int, ...] = (),
                **kwargs: Any) -> requests.Response:
        """Send a request; retry connection failures and 429/502/503/504 with backoff; raise ApiError
        for any other status >= 400 not in `ok`. A request that must not run twice (idempotent=False)
        is retried only when the service cannot have processed it."""
        url = self.url + path
        kwargs.setdefault("timeout", self.timeout_s)
        for attempt in range(self.retries + 1):
            response, problem = None, ""
            try:
                self.requests_sent += 1
                response = self.session.request(method, url, **kwargs)
            except requests.RequestException as exc:
                if attempt == self.retries or not (idempotent or _nothing_sent(exc)):
                    raise NetworkError(f"{method} {url} failed: {type(exc).__name__}: {_short(exc)}") from None
                problem = f"{type(exc).__name__}"
            else:
                statuses = RETRY_STATUSES if idempotent else RETRY_STATUSES_UNSAFE
                if response.status_code not in statuses or attempt == self.retries:
                    break
                problem = f"{response.status_code} {_error_of(response)[0]}"
            delay = self._delay(attempt, response)
            self.say(f"{method} {path}: {problem}; trying again in {delay:.1f} s "
                     f"({attempt + 1} of {self.retries} retries)")
            time.sleep(delay)
        assert response is not None
        if response.status_code >= 400 and response.status_code not in ok:
            error, detail = _error_of(response)
            raise ApiError(response.status_code, error, detail, method, url)
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        """GET and decode JSON."""
        return self.request("GET", path, **kwargs).json()


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."
