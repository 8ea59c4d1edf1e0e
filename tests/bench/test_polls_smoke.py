"""bench/polls.py at toy size: real gunicorn and PostgreSQL; plain polls get 200, ETag polls get 304."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.services import suite_redis_url

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_polls_bench_prints_cpu_per_poll_for_both_phases(postgres_url):
    admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    out = subprocess.run(
        [sys.executable, "bench/polls.py", "--pollers", "4", "--seconds", "2", "--poll-interval", "0.1",
         "--web-workers", "1", "--postgres-url", admin_url, "--redis-url", suite_redis_url(3)],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-4000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    plain, conditional = record["plain"], record["if_none_match"]
    assert plain["polls"] > 10 and plain["errors"] == 0 and plain["not_modified"] == 0
    # Every client's first poll has no ETag yet; after it, the unchanged job answers 304.
    assert conditional["errors"] == 0 and conditional["not_modified"] >= conditional["polls"] - 4 > 0
    assert plain["web_cpu_ms_per_poll"] > 0 and plain["p95_ms"] >= plain["p50_ms"] > 0
