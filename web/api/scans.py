"""One scan with its predictions, and reviewers' labels for it (review, withdraw)."""
from __future__ import annotations

import logging

from flask import Response, jsonify, url_for

from db.models import AuditEvent, Scan
from tasks.reviews import ReviewError, add_review, current_review, review_history, withdraw_review
from web.api import bp
from web.auth import current_user, has_role
from web.errors import ApiError
from web.serialize import scan_detail_json
from web.state import db_session, get_or_404
from web.validation import json_object, no_body

logger = logging.getLogger(__name__)


def _scan_body(scan_id: int) -> dict:
    session = db_session()
    scan = get_or_404(Scan, scan_id, "scan")
    return scan_detail_json(scan, current_review(session, scan_id), review_history(session, scan_id))


@bp.get("/scans/<int:scan_id>")
def scan(scan_id: int) -> Response:
    """The scan, the predictions of the version that classified it, its current review and every review."""
    return jsonify(_scan_body(scan_id))


@bp.post("/scans/<int:scan_id>/review")
def review_scan(scan_id: int) -> tuple[Response, int, dict[str, str]]:
    """Confirm or correct the scan's label: {"label": class, "note": text}; the latest review wins."""
    body = json_object(("label", "note"))
    label, note = body.get("label"), body.get("note", "")
    if not isinstance(label, str) or not label:
        raise ApiError(422, "bad_review", 'send JSON {"label": "<class>", "note": "<optional text>"}')
    if not isinstance(note, str):
        raise ApiError(422, "bad_review", "note must be a string")
    session = db_session()
    get_or_404(Scan, scan_id, "scan")
    user = current_user()
    try:
        review = add_review(session, scan_id, user.id, label, note)
    except ReviewError as exc:
        raise ApiError(422, "bad_review", str(exc)) from None
    session.add(AuditEvent(user_id=user.id, action="scan.review", target=f"scan:{scan_id}",
                           detail={"review": review.id, "label": label}))
    session.commit()
    logger.info("scan %s reviewed as %s by %s", scan_id, label, user.name)
    url = url_for("api.scan", scan_id=scan_id)
    return jsonify(_scan_body(scan_id)), 201, {"Location": url}


@bp.delete("/scans/<int:scan_id>/review")
def withdraw_scan_review(scan_id: int) -> Response:
    """Withdraw the scan's current review (its author or an admin); the previous one is current again."""
    no_body()
    session = db_session()
    get_or_404(Scan, scan_id, "scan")
    user = current_user()
    review = current_review(session, scan_id)
    if review is None:
        raise ApiError(404, "not_found", f"scan {scan_id} has no review to withdraw")
    if review.user_id != user.id and not has_role(user, "admin"):
        raise ApiError(403, "forbidden", "only the review's author or an admin may withdraw it; "
                                         "to correct it, post a new review")
    try:
        withdrawn, restored = withdraw_review(session, scan_id, user.id)
    except ReviewError as exc:  # withdrawn by someone else in the meantime
        raise ApiError(409, "conflict", str(exc)) from None
    session.add(AuditEvent(user_id=user.id, action="scan.review_withdraw", target=f"scan:{scan_id}",
                           detail={"review": withdrawn.id, "label": withdrawn.label,
                                   "restored": restored.id if restored is not None else None}))
    session.commit()
    logger.info("review %s of scan %s withdrawn by %s", withdrawn.id, scan_id, user.name)
    return jsonify(_scan_body(scan_id))
