"""What the broker holds: messages waiting per queue (Redis lists or filesystem transport files).

The sweeper uses it to tell scans still waiting in a queue from scans whose message
was lost (a Redis restarted without persistence); the web reports it in /healthz and
/metrics.
"""
from __future__ import annotations

from pathlib import Path

from config.settings import Settings

QUEUES = ("inference", "training", "default")
# kombu's Redis transport keeps priority levels 3/6/9 in sibling lists named queue\x06\x16<n>.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
BROKER_TIMEOUT_S = 1.0


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting per queue (not counting those a worker has taken and not yet acknowledged)."""
    url = settings.celery_broker_url
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=BROKER_TIMEOUT_S,
                                      socket_connect_timeout=BROKER_TIMEOUT_S)
        prefix = settings.broker_key_prefix
        try:
            pipe = client.pipeline()
            for queue in QUEUES:
                for suffix in PRIORITY_SUFFIXES:
                    pipe.llen(prefix + queue + suffix)
            counts = pipe.execute()
        finally:
            client.close()
        per = len(PRIORITY_SUFFIXES)
        return {q: int(sum(counts[i * per:(i + 1) * per])) for i, q in enumerate(QUEUES)}
    if url.startswith("filesystem://"):
        folder = Path(settings.data_dir) / "broker" / "queue"
        names = [p.name for p in folder.glob("*.msg")] if folder.is_dir() else []
        return {q: sum(1 for n in names if n.endswith(f".{q}.msg")) for q in QUEUES}
    raise RuntimeError(f"queue depth is not available for broker {url.split(':', 1)[0]}")


def queue_workers(settings: Settings, timeout_s: float = 0.5) -> dict[str, list[str]] | None:
    """The workers consuming each queue (asked over the broker's control channel), or None where the
    transport cannot broadcast (the filesystem transport). Raises when the broker does not answer."""
    if settings.celery_broker_url.startswith("filesystem://"):
        return None
    from tasks.dispatch import celery_for  # imports Celery: only when asked

    replies = celery_for(settings).control.inspect(timeout=timeout_s).active_queues() or {}
    consumers: dict[str, list[str]] = {queue: [] for queue in QUEUES}
    for worker, queues in sorted(replies.items()):
        for queue in queues or ():
            consumers.setdefault(queue.get("name", "?"), []).append(worker)
    return consumers
