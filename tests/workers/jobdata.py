"""Helpers shared by worker and integration tests: settings, jobs with stored files, queue peeking."""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from config.settings import Settings, load_settings
from db.models import Job, Scan


def service_settings(tmp_path: Path, database_url: str, redis_url: str, **overrides) -> Settings:
    """Settings for a test: its own DATA_DIR, the given database and Redis."""
    values = dict(data_dir=tmp_path / "data", database_url=database_url, redis_url=redis_url,
                  inference_batch_size=4, retrain_schedule="")
    values.update(overrides)
    return load_settings(environ={"APP_ENV": "test"}, overrides=values)


def scan_files(good: int = 3, seed: int = 0, size: int = 48) -> dict[str, bytes]:
    """`good` synthetic scans (JPEG and PNG) plus a truncated JPEG and a text file."""
    from tests.helpers.tiny_bundle import synthetic_images

    images, _ = synthetic_images(per_class=max(1, (good + 3) // 4), image_size=size, seed=seed)
    files: dict[str, bytes] = {}
    for i in range(good):
        ext = ".jpg" if i % 2 == 0 else ".png"
        ok, data = cv2.imencode(ext, cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
        assert ok
        files[f"study{i % 2}/slice_{i:03d}{ext}"] = data.tobytes()
    jpeg = files["study0/slice_000.jpg"]
    files["bad/truncated.jpg"] = jpeg[: len(jpeg) // 2]
    files["bad/notes.jpg"] = b"this is not an image at all, just some text\n" * 4
    return files


def store_blob(settings: Settings, data: bytes) -> str:
    """Store bytes by SHA-256 under DATA_DIR/blobs like the web's ingest does; return the hash."""
    sha = hashlib.sha256(data).hexdigest()
    path = settings.uploads_dir / sha[:2] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


def activate_bundle(factory, bundle: Path) -> int:
    """Register a bundle as a model version, make it the active one; return its id."""
    from tasks.versions import activate_version, register_bundle

    with factory() as session:
        version = register_bundle(session, bundle)
        activate_version(session, version)
        session.commit()
        return version.id


def make_job(session, settings: Settings, files: dict[str, bytes], sealed: bool = True) -> Job:
    """A committed job with one queued scan per file (blobs stored)."""
    job = Job(source="test", name="test job", sealed=sealed)
    session.add(job)
    session.flush()
    for path, data in files.items():
        session.add(Scan(job_id=job.id, sha256=store_blob(settings, data), frame=0, path=path,
                         study=path.split("/", 1)[0] if "/" in path else ""))
    session.flush()
    job.total = len(files)
    session.commit()
    return job


def queued_messages(redis_url: str, queue: str) -> list[tuple[str, list]]:
    """(task name, args) of the messages waiting in a Redis-backed Celery queue."""
    import redis

    client = redis.Redis.from_url(redis_url)
    out = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], body[0]))
    client.close()
    return list(reversed(out))  # kombu LPUSHes; oldest last


def good_paths(files: Iterable[str]) -> list[str]:
    """The paths of scan_files() that decode."""
    return sorted(p for p in files if not p.startswith("bad/"))


def noise_image(size: int = 40, seed: int = 0) -> np.ndarray:
    """A random uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 255, size=(size, size, 3), dtype=np.uint8)
