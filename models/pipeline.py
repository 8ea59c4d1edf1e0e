"""Prefetching batch loader: decode the next batches in threads while the current one computes."""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """One item after loading: its value, or the exception that loading raised."""

    item: T
    value: Any = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """True when loading succeeded."""
        return self.error is None


def _safe(load_fn: Callable[[T], Any], item: T) -> Loaded[T]:
    try:
        return Loaded(item, load_fn(item))
    except Exception as exc:  # noqa: BLE001 - one bad file must not sink its batch
        return Loaded(item, error=exc)


def iter_prefetched_batches(
    items: Iterable[T],
    load_fn: Callable[[T], Any],
    batch_size: int,
    prefetch: int = 2,
    workers: int | None = None,
) -> Iterator[list[Loaded[T]]]:
    """Yield batches of Loaded results in input order, keeping `prefetch` batches loading ahead.

    load_fn runs in a thread pool (OpenCV and pydicom release the GIL for the heavy parts),
    so decoding overlaps with whatever the consumer does with the current batch.  A load
    error is returned in its Loaded, never raised.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    workers = workers or min(4, os.cpu_count() or 1)
    iterator = iter(items)
    pending: deque[list[Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prefetch") as pool:

        def submit_next() -> bool:
            futures = []
            for item in iterator:
                futures.append(pool.submit(_safe, load_fn, item))
                if len(futures) == batch_size:
                    break
            if futures:
                pending.append(futures)
            return bool(futures)

        try:
            for _ in range(prefetch + 1):
                if not submit_next():
                    break
            while pending:
                futures = pending.popleft()
                submit_next()
                yield [f.result() for f in futures]
        finally:
            for futures in pending:
                for future in futures:
                    future.cancel()
