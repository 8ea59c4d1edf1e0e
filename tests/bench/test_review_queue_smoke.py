"""bench/review_queue.py at toy size on a real PostgreSQL: the review-queue query can use the
partial index of migration 0007, and finds the same flagged scans with and without it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_the_review_queue_query_uses_the_partial_index(postgres_url):
    admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    out = subprocess.run([sys.executable, "-m", "bench.review_queue", "--scans", "3000", "--repeats", "1",
                          "--postgres-url", admin_url, "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-4000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["plan_uses_index"] is True
    for name in ("with_index", "without_index"):
        assert record[name]["flagged"] == 150 and record[name]["page_rows"] == 50
