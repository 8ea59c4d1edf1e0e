"""What the scan page needs beyond the API's scan JSON: its picture (as PNG and its window) and its neighbours."""
from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

from flask import Request, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.settings import Settings
from db.models import Scan
from training.decode import DecodeError
from web.errors import ApiError
from web.scan_image import Picture, load_picture, png_bytes, windowed
from web.thumbnails import CACHE as THUMBNAILS, MAX_SIZE as MAX_THUMBNAIL, MIN_SIZE as MIN_THUMBNAIL, shrink

logger = logging.getLogger(__name__)
# Part of every picture's ETag: bump it when the rendering changes, so browsers fetch again.
RENDERING = "1"


def _picture(settings: Settings, scan: Scan) -> Picture:
    try:
        return load_picture(settings.uploads_dir, scan.sha256, scan.frame, settings.max_image_pixels)
    except (FileNotFoundError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise ApiError(422, "undecodable", f"this scan's file cannot be shown: {exc}") from None
        raise ApiError(404, "not_found", f"the stored file of scan {scan.id} is missing") from None


def picture_info(settings: Settings, scan: Scan) -> tuple[dict[str, Any] | None, str]:
    """(size, default window and value range for the page's controls, '') or (None, why it cannot be shown)."""
    try:
        picture = _picture(settings, scan)
    except ApiError as exc:
        return None, exc.detail
    width, height = picture.size
    # 8-bit pictures: half steps, so the identity window (127.5 wide 255) is on the slider's grid.
    span = picture.high - picture.low
    step = 0.5 if not picture.stored_values else 1.0 if span > 50 else float(f"{span / 255.0:.3g}") or 1.0
    return {"width": width, "height": height, "source": picture.source, "stored_values": picture.stored_values,
            "center": _round(picture.center), "window": _round(picture.width),
            "low": _round(picture.low), "high": _round(picture.high), "step": step}, ""


def _round(value: float) -> float | int:
    value = float(f"{value:.6g}")
    return int(value) if value.is_integer() else value  # "1200", not "1200.0", on the page


def _window_arg(request: Request, name: str) -> float | None:
    raw = request.args.get(name, "")
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (name == "width" and value <= 0):
        raise ApiError(400, "bad_window", f"{name} must be a finite number{' above 0' if name == 'width' else ''}")
    return value


def _size_arg(request: Request) -> int | None:
    raw = request.args.get("size", "")
    if raw == "":
        return None
    # ASCII digits only ('²' is a digit to str.isdigit, not to int), and few of them
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not MIN_THUMBNAIL <= int(raw) <= MAX_THUMBNAIL:
        raise ApiError(400, "bad_size", f"size must be a whole number of pixels from {MIN_THUMBNAIL} to "
                                        f"{MAX_THUMBNAIL}, got {raw[:20]!r}")
    return int(raw)


def _render(settings: Settings, scan: Scan, center: float | None, width: float | None, size: int | None) -> bytes:
    if size is None:
        return png_bytes(windowed(_picture(settings, scan), center, width))
    # Thumbnails (the tables' small pictures, in the scan's own window) are kept in memory.
    return THUMBNAILS.get((scan.sha256, scan.frame, size, center, width, RENDERING),
                          lambda: png_bytes(shrink(windowed(_picture(settings, scan), center, width), size)))


def image_response(settings: Settings, scan: Scan, request: Request) -> Response:
    """The scan's PNG, revalidated by ETag on every use (a logged-out browser must not show it from cache);
    ?size=N (16-512) gives a thumbnail whose longer side is at most N pixels."""
    center, width = _window_arg(request, "center"), _window_arg(request, "width")
    size = _size_arg(request)
    # Blobs are content-addressed, so the content, frame, window and size name the picture exactly.
    etag = hashlib.sha256(f"{scan.sha256}:{scan.frame}:{center}:{width}:{size}:{RENDERING}".encode()).hexdigest()[:32]
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        response = Response(_render(settings, scan, center, width, size), mimetype="image/png")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["Content-Disposition"] = f'inline; filename="scan-{scan.id}.png"'
    return response


def neighbours(session: Session, scan: Scan) -> dict[str, int | None]:
    """The previous and next scan of the same job (by id), this one's position and the job's count."""
    in_job = Scan.job_id == scan.job_id
    previous = session.scalar(select(func.max(Scan.id)).where(in_job, Scan.id < scan.id))
    following = session.scalar(select(func.min(Scan.id)).where(in_job, Scan.id > scan.id))
    position = session.scalar(select(func.count()).select_from(Scan).where(in_job, Scan.id <= scan.id))
    total = session.scalar(select(func.count()).select_from(Scan).where(in_job))
    return {"previous": previous, "next": following, "position": position, "total": total}
