"""models.pipeline: ordered, complete batches; errors kept per item; loading runs ahead."""

from __future__ import annotations

import threading
import time

import pytest

from models.pipeline import iter_prefetched_batches


def test_batches_in_order_with_errors():
    def load(i: int) -> int:
        if i == 3:
            raise ValueError("truncated JPEG")
        return i * i

    batches = list(iter_prefetched_batches(range(7), load, batch_size=3, workers=2))
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = [x for b in batches for x in b]
    assert [x.item for x in flat] == list(range(7))
    assert [x.value for x in flat if x.ok] == [0, 1, 4, 16, 25, 36]
    bad = [x for x in flat if not x.ok]
    assert len(bad) == 1 and bad[0].item == 3 and str(bad[0].error) == "truncated JPEG"


def test_loading_runs_ahead_of_the_consumer():
    started: list[int] = []
    lock = threading.Lock()

    def load(i: int) -> int:
        with lock:
            started.append(i)
        return i

    batches = iter_prefetched_batches(range(20), load, batch_size=2, prefetch=2, workers=2)
    first = next(batches)
    assert [x.item for x in first] == [0, 1]
    deadline = time.monotonic() + 5
    while len(started) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The first batch plus two more were loading before the consumer asked for them.
    assert len(started) >= 6
    assert len(started) <= 8
    batches.close()


def test_bad_batch_size():
    with pytest.raises(ValueError):
        list(iter_prefetched_batches([1], lambda x: x, batch_size=0))
