"""Exports of a results query: every matching row (no paging), as CSV or as one JSON page, streamed."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timezone
from typing import Any, Iterator

from sqlalchemy.orm import Session

from models import ENSEMBLE_NAME as ENSEMBLE
from web.queries import ResultFilter, known_classes, ordered_rows, row_json
from web.serialize import iso

BATCH = 500
# Spreadsheets run cells starting with these as formulas; paths come from uploaders.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_filename(flt: ResultFilter, extension: str, now: datetime | None = None) -> str:
    """A file name that says what an export holds, e.g. results-job-7-glioma-2026-11-29.csv."""
    flags = {"reviewed": flt.reviewed, "disagreeing": flt.disagrees, "to-review": flt.needs_review}
    parts = [f"job-{flt.job}" if flt.job is not None else "", flt.label or "",
             flt.model if flt.model != ENSEMBLE else "",
             f"version-{flt.model_version}" if flt.model_version is not None else "",
             f"study-{flt.study}" if flt.study else "",
             *[f"{name}-{value}" for name, value in (
                 ("agreement-min", flt.min_agreement), ("agreement-max", flt.max_agreement),
                 ("confidence-min", flt.min_confidence), ("confidence-max", flt.max_confidence)) if value is not None],
             *[(name if value else "not-" + name) for name, value in flags.items() if value is not None]]
    # Only safe characters: a study UID or label never breaks the header or names a path.
    words = [re.sub(r"(?:[^A-Za-z0-9.]|\.{2,})+", "-", p).strip("-.")[:64] for p in parts if p]
    day = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
    return "-".join(["results", *[w for w in words if w], day]) + "." + extension


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _partitions(session: Session, flt: ResultFilter) -> Iterator[list]:
    query = ordered_rows(flt).execution_options(yield_per=BATCH)
    yield from session.execute(query).partitions(BATCH)


def iter_csv(session: Session, flt: ResultFilter) -> Iterator[str]:
    """Every matching row as CSV text, produced in batches so large exports stream."""
    classes = known_classes(session)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["scan_id", "job_id", "path", "study", "frame", "classified", "reused", "model",
                     "model_version", "label", "confidence", "agreement", *[f"p_{c}" for c in classes],
                     "reviewed_label", "reviewed_by", "reviewed_at", "needs_review"])
    yield buffer.getvalue()
    for partition in _partitions(session, flt):
        buffer.seek(0)
        buffer.truncate()
        for row in partition:
            probs = row[11] or {}
            writer.writerow([row[0], row[1], _cell(row[2]), _cell(row[3]), row[4], iso(row[5]),
                             int(bool(row[6])), row[7], row[8], row[9], f"{row[10]:.6f}",
                             "" if row[12] is None else row[12],
                             *[f"{probs[c]:.6f}" if c in probs else "" for c in classes],
                             row[13] or "", _cell(row[14] or ""), iso(row[15]) or "",
                             "" if row[16] is None else int(row[16])])
        yield buffer.getvalue()


def iter_json(session: Session, flt: ResultFilter) -> Iterator[str]:
    """Every matching row as one page of the API's JSON shape (`format=json_all`), streamed.

    The counts come last, from the rows actually written, so they match the file exactly even
    while scans are being classified."""
    yield f'{{"model": {json.dumps(flt.model)}, "results": ['
    total = 0
    for partition in _partitions(session, flt):
        rows = ",".join(json.dumps(row_json(row)) for row in partition)
        yield ("," if total else "") + rows
        total += len(partition)
    yield f'], "total": {total}, "limit": {total}, "offset": 0, "page": 1, "per_page": {total}}}\n'
