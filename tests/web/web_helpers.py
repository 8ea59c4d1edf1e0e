"""Helpers shared by the web tests: app building, upload forms, broker messages, stored files."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.helpers.services import suite_redis_url

# The web tests' own Redis database (they flush it); TEST_REDIS_URL moves the suite's databases.
WEB_REDIS_URL = suite_redis_url(2)
# One engine batch of 4 scans per classify task, so small uploads make several tasks.
WEB_OVERRIDES = {"env": "test", "inference_batch_size": 4, "inference_batches_per_task": 1, "max_upload_mb": 2,
                 "max_zip_files": 40, "log_level": "WARNING"}


def build_app(tmp_path: Path, database_url: str, **overrides: Any):
    """create_app with the web test settings plus overrides."""
    from web import create_app

    values = {**WEB_OVERRIDES, "data_dir": tmp_path / "data", "database_url": database_url,
              "redis_url": WEB_REDIS_URL, **overrides}
    return create_app(values)


def png_bytes(seed: int = 0, size: int = 32) -> bytes:
    """A small, valid, seed-dependent PNG."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def upload_data(files: list[tuple[str, bytes]], with_paths: bool = True) -> dict[str, Any]:
    """Multipart form for the test client: files (name from the path's basename) + parallel paths."""
    data: dict[str, Any] = {"files": [(io.BytesIO(content), path.rsplit("/", 1)[-1]) for path, content in files]}
    if with_paths:
        data["paths"] = [path for path, _ in files]
    return data


def queued_messages(client: Any, queue: str) -> list[dict[str, Any]]:
    """Celery messages waiting in a Redis list: [{'task', 'args', 'kwargs'}], oldest first."""
    out = []
    for raw in reversed(client.lrange(queue, 0, -1)):  # kombu LPUSHes, workers BRPOP
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        args, kwargs, _ = body
        out.append({"task": message["headers"]["task"], "args": args, "kwargs": kwargs})
    return out


def blob_files(app) -> list[Path]:
    """Every stored blob under DATA_DIR/blobs."""
    root = app.extensions["mri"].settings.uploads_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def leftovers(app) -> list[Path]:
    """Anything left in DATA_DIR/tmp (staging and spooled uploads)."""
    root = app.extensions["mri"].settings.data_dir / "tmp"
    return [p for p in root.rglob("*")] if root.exists() else []
