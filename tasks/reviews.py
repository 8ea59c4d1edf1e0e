"""Reviewed labels: a scan's current review (the latest not withdrawn), adding and withdrawing one,
and the reviewed scans a training run adds to its pool."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Subquery, func, select
from sqlalchemy.orm import Session

from config.storage import blob_path
from db.base import utcnow
from db.models import ModelVersion, Review, Scan
from tasks.versions import active_version

logger = logging.getLogger(__name__)

MAX_NOTE_CHARS = 2000


class ReviewError(ValueError):
    """A review that cannot be recorded (a label outside the known classes, nothing to withdraw)."""


def current_review_ids() -> Subquery:
    """(scan_id, review_id) of every scan's current review: its latest one not withdrawn."""
    return (select(Review.scan_id.label("scan_id"), func.max(Review.id).label("review_id"))
            .where(Review.withdrawn.is_(None)).group_by(Review.scan_id).subquery("current_review"))


def current_review(session: Session, scan_id: int) -> Review | None:
    """The scan's current review, or None when it has none (or all were withdrawn)."""
    return session.execute(select(Review).where(Review.scan_id == scan_id, Review.withdrawn.is_(None))
                           .order_by(Review.id.desc()).limit(1)).scalar_one_or_none()


def review_history(session: Session, scan_id: int) -> list[Review]:
    """Every review of the scan, withdrawn ones included, newest first."""
    return list(session.execute(select(Review).where(Review.scan_id == scan_id)
                                .order_by(Review.id.desc())).scalars())


def allowed_labels(session: Session, scan: Scan) -> list[str]:
    """Classes of the version that classified the scan, then those of the active version."""
    labels: list[str] = []
    versions = [session.get(ModelVersion, scan.model_version_id) if scan.model_version_id else None,
                active_version(session)]
    for version in versions:
        for name in ((version.manifest or {}).get("classes", []) if version is not None else []):
            if str(name) not in labels:
                labels.append(str(name))
    return labels


def _locked_scan(session: Session, scan_id: int) -> Scan:
    # One review change per scan at a time, so "latest" and "previous" are well defined.
    scan = session.execute(select(Scan).where(Scan.id == scan_id).with_for_update(key_share=True)
                           ).scalar_one_or_none()
    if scan is None:
        raise LookupError(f"scan {scan_id} does not exist")
    return scan


# A scan in this status (unreadable, or given up on) takes no review and brings none to training.
UNREVIEWABLE_STATUS = "failed"


def reviewable(scan: Scan) -> bool:
    """Whether reviewers may label the scan: not one that failed (unreadable, or given up on)."""
    return scan.status != UNREVIEWABLE_STATUS


def add_review(session: Session, scan_id: int, user_id: int | None, label: str, note: str = "") -> Review:
    """Record a review of the scan (it becomes the current one); flushed, not committed."""
    scan = _locked_scan(session, scan_id)
    if not reviewable(scan):
        # A failed scan is usually a file that is not a readable image: a label on it would only
        # join the training pool as noise.
        raise ReviewError(f"scan {scan_id} failed ({scan.error or 'no reason recorded'}): "
                          "only a scan that is classified, or queued to be, can be reviewed")
    allowed = allowed_labels(session, scan)
    if label not in allowed:
        known = ", ".join(allowed) or "none: no model version classified this scan and none is active"
        raise ReviewError(f"label must be one of the model's classes ({known}), got {label!r}")
    if len(note) > MAX_NOTE_CHARS:
        raise ReviewError(f"note is {len(note)} characters; at most {MAX_NOTE_CHARS}")
    review = Review(scan_id=scan.id, user_id=user_id, label=label, note=note, created=utcnow())
    session.add(review)
    session.flush()
    return review


def withdraw_review(session: Session, scan_id: int, user_id: int | None) -> tuple[Review, Review | None]:
    """Withdraw the scan's current review; return it and the review now current (the previous one, or None)."""
    _locked_scan(session, scan_id)
    review = current_review(session, scan_id)
    if review is None:
        raise ReviewError(f"scan {scan_id} has no review to withdraw")
    review.withdrawn, review.withdrawn_by = utcnow(), user_id
    session.flush()
    return review, current_review(session, scan_id)


def reviewed_scans(session: Session) -> list[tuple[int, str, int, str]]:
    """(review id, sha256, frame, label) of every scan with a current review, oldest review first."""
    current = current_review_ids()
    rows = session.execute(
        select(Review.id, Scan.sha256, Scan.frame, Review.label)
        .join(current, current.c.review_id == Review.id).join(Scan, Scan.id == Review.scan_id)
        .where(Scan.status != UNREVIEWABLE_STATUS)  # reviews from before add_review refused them
        .order_by(Review.id)).all()
    return [(int(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]


def reviewed_items(session: Session, uploads_dir: Path) -> tuple[list[Any], int]:
    """Reviewed scans as training items (their stored blob, label, frame), oldest review first,
    and how many were left out because their stored file is missing."""
    from training.datasets import LabelledImage

    items, missing = [], 0
    for _, sha, frame, label in reviewed_scans(session):
        path = blob_path(uploads_dir, sha)
        if not path.is_file():
            missing += 1
            continue
        items.append(LabelledImage(str(path), label, sha, frame))
    if missing:
        logger.warning("%d reviewed scan(s) left out of training: their stored file is missing", missing)
    return items, missing

