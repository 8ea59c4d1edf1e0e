"""What the results page needs beyond a results query: the filters' choices, sort and page links, exports."""
from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlencode

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import ModelVersion, Scan
from web.queries import DEFAULT_SORT, known_classes

STUDY_CHOICES = 200  # the latest studies offered as suggestions in the study field
PER_PAGE_CHOICES = (25, 50, 100, 200)
# The table's sortable columns: (field of a result row, heading, first direction when clicked).
COLUMNS = (("path", "Scan", "asc"), ("study", "Study", "asc"), ("job_id", "Job", "desc"), ("label", "Label", "asc"),
           ("confidence", "Confidence", "desc"), ("agreement", "Agree", "desc"),
           ("model_version", "Version", "desc"), ("classified", "Classified", "desc"))


def choices(session: Session) -> dict[str, Any]:
    """Labels (every version's classes), model versions (newest first) and recent studies for the filters."""
    latest = func.max(Scan.id)
    studies = session.execute(select(Scan.study).where(Scan.study != "").group_by(Scan.study)
                              .order_by(latest.desc()).limit(STUDY_CHOICES)).scalars().all()
    versions = session.execute(select(ModelVersion.id, ModelVersion.status).order_by(ModelVersion.id.desc())).all()
    return {"labels": known_classes(session), "versions": [{"id": v, "status": s} for v, s in versions],
            "studies": sorted(studies), "per_page": PER_PAGE_CHOICES}


def _url(base: Mapping[str, str], **changes: Any) -> str:
    merged = {**base, **{k: str(v) for k, v in changes.items() if v is not None}}
    return "?" + urlencode({k: v for k, v in merged.items() if v != ""})


def sort_headers(args: Mapping[str, str]) -> list[dict[str, str]]:
    """Each sortable column: heading, the link that sorts by it (again: the other way) and aria-sort."""
    current = args.get("sort") or DEFAULT_SORT
    field, descending = current.removeprefix("-"), current.startswith("-")
    base = {k: v for k, v in args.items() if k not in ("page", "sort")}
    headers = []
    for name, heading, first in COLUMNS:
        if name == field:
            state = "descending" if descending else "ascending"
            target = name if descending else f"-{name}"
        else:
            state, target = "none", f"-{name}" if first == "desc" else name
        headers.append({"field": name, "heading": heading, "url": _url(base, sort=target), "aria": state})
    return headers


def page_links(args: Mapping[str, str], page: int, pages: int) -> list[dict[str, Any]]:
    """First, previous, a few around the current page, next and last (each a link unless it is this page)."""
    base = {k: v for k, v in args.items() if k != "page"}
    shown = sorted({1, pages, *range(max(1, page - 2), min(pages, page + 2) + 1)})
    links: list[dict[str, Any]] = []
    if page > 1:
        links.append({"text": "← Previous", "url": _url(base, page=page - 1), "rel": "prev"})
    previous = 0
    for number in shown:
        if number - previous > 1:
            links.append({"text": "…", "url": "", "gap": True})
        links.append({"text": str(number), "url": "" if number == page else _url(base, page=number),
                      "current": number == page})
        previous = number
    if page < pages:
        links.append({"text": "Next →", "url": _url(base, page=page + 1), "rel": "next"})
    return links


def export_urls(args: Mapping[str, str]) -> dict[str, str]:
    """The API's exports of exactly the filtered rows, in the page's order (paging left out)."""
    base = {k: v for k, v in args.items() if k not in ("page", "per_page", "limit", "offset", "format")}
    return {fmt: "/api/v1/results?" + urlencode({**base, "format": fmt}) for fmt in ("csv", "json_all")}


def active_filters(args: Mapping[str, str]) -> int:
    """How many filters are set (paging and sort are not filters)."""
    return sum(1 for k in args if k not in ("page", "per_page", "limit", "offset", "sort"))
