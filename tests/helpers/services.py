"""Connections to the real services the tests use, failing with a plain message when one is down."""
from __future__ import annotations

from typing import Any

import pytest


def redis_client(url: str, *, flush: bool) -> Any:
    """A redis-py client on `url` (its db flushed when `flush`), or fail the test saying how to start Redis."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url)
    try:
        client.flushdb() if flush else client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {url}: {exc}. Start it (see README).")
    return client
