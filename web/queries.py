"""The stored-results query behind GET /api/v1/results, the /results page and the exports (web.exports)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timezone
from typing import Any, Mapping

from sqlalchemy import Select, and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from db.models import ModelVersion, Prediction, Review, Scan, User
from models import ENSEMBLE_NAME as ENSEMBLE, MODEL_NAMES
from tasks.reviews import current_review_ids
from web.errors import ApiError
from web.serialize import iso

# The query parameters a results query reads (the API adds `format`).
FILTER_ARGS = ("model", "label", "min_confidence", "max_confidence", "min_agreement", "max_agreement",
               "model_version", "study", "job", "since", "until", "reviewed", "disagrees", "needs_review")
PAGING_ARGS = ("page", "per_page", "limit", "offset", "sort")
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 1000
# Past this the database's integer parameters overflow (SQLite: 2**63); no table gets near it.
MAX_OFFSET = 2**31 - 1
# `sort` names a field of a result row; a leading '-' sorts descending. Ties go newest scan first.
SORT_FIELDS = ("scan_id", "job_id", "path", "study", "label", "confidence", "agreement", "model_version",
               "classified")
DEFAULT_SORT = "-scan_id"


@dataclass(frozen=True)
class ResultFilter:
    """Validated filters and paging of a results query."""

    model: str = ENSEMBLE
    label: str | None = None
    min_confidence: float | None = None
    study: str | None = None
    job: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    # True: only scans with a current review; False: only scans without one.
    reviewed: bool | None = None
    # True: the reviewed label differs from the ensemble's; False: it agrees (reviewed scans either way).
    disagrees: bool | None = None
    max_confidence: float | None = None
    # How many of the models agree with the scan's ensemble label (whatever `model` is shown).
    min_agreement: int | None = None
    max_agreement: int | None = None
    model_version: int | None = None
    # True: scans the version's review rule sent to review; False: scans it accepted (scans of a
    # version without a rule are neither).
    needs_review: bool | None = None
    sort: str = DEFAULT_SORT
    limit: int = DEFAULT_PER_PAGE
    offset: int = 0


def _int_arg(args: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_filter", f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ApiError(400, "bad_filter", f"{name} must be {bound}, got {value}")
    return value


def _bool_arg(args: Mapping[str, str], name: str) -> bool | None:
    raw = args.get(name)
    if raw in (None, ""):
        return None
    if raw.lower() not in ("true", "false"):
        raise ApiError(400, "bad_filter", f"{name} must be true or false, got {raw!r}")
    return raw.lower() == "true"


def _time_arg(args: Mapping[str, str], name: str) -> datetime | None:
    raw = args.get(name)
    if not raw:
        return None
    text = raw.strip().replace("Z", "+00:00")
    if name == "until" and len(text) == 10:  # a bare date: through the end of that day (UTC)
        try:
            day = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return datetime.combine(day.date(), time.max, tzinfo=timezone.utc)
    # An unescaped '+' of an offset arrives as a space in a query string.
    for candidate in (text, text[:-6] + "+" + text[-5:] if text[-6:-5] == " " else text):
        try:
            value = datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    else:
        raise ApiError(400, "bad_filter", f"{name} must be an ISO 8601 date or time, got {raw!r}")
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _confidence_arg(args: Mapping[str, str], name: str) -> float | None:
    raw = args.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise ApiError(400, "bad_filter", f"{name} must be a number between 0 and 1")
    return value


def _sort_arg(args: Mapping[str, str]) -> str:
    raw = args.get("sort") or DEFAULT_SORT
    if raw.removeprefix("-") not in SORT_FIELDS:
        raise ApiError(400, "bad_filter", f"sort must be one of {', '.join(SORT_FIELDS)}, "
                                          f"with a leading '-' for descending; got {raw!r}")
    return raw


def parse_filter(args: Mapping[str, str]) -> ResultFilter:
    """Read filters from query arguments; 400 with a plain reason for a bad one."""
    model = args.get("model") or ENSEMBLE
    if model not in (*MODEL_NAMES, ENSEMBLE):
        raise ApiError(400, "bad_filter", f"model must be one of {', '.join((*MODEL_NAMES, ENSEMBLE))}")
    min_conf, max_conf = _confidence_arg(args, "min_confidence"), _confidence_arg(args, "max_confidence")
    agree = {name: _int_arg(args, name, 0, 0, len(MODEL_NAMES)) if args.get(name) else None
             for name in ("min_agreement", "max_agreement")}
    if "limit" in args or "offset" in args:
        limit = _int_arg(args, "limit", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
        offset = _int_arg(args, "offset", 0, 0, MAX_OFFSET)
    else:
        limit = _int_arg(args, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
        offset = (_int_arg(args, "page", 1, 1, MAX_OFFSET // limit + 1) - 1) * limit
    return ResultFilter(model=model, label=args.get("label") or None, min_confidence=min_conf,
                        study=args.get("study") or None,
                        job=_int_arg(args, "job", 0, 1) if args.get("job") else None,
                        since=_time_arg(args, "since"), until=_time_arg(args, "until"),
                        reviewed=_bool_arg(args, "reviewed"), disagrees=_bool_arg(args, "disagrees"),
                        max_confidence=max_conf, **agree,
                        model_version=_int_arg(args, "model_version", 0, 1, MAX_OFFSET)
                        if args.get("model_version") else None,
                        needs_review=_bool_arg(args, "needs_review"),
                        sort=_sort_arg(args), limit=limit, offset=offset)


_current = current_review_ids()
_reviewer = aliased(User)
# The scan's ensemble prediction, for agreement when another model's rows are shown.
_ensemble = aliased(Prediction)


def _agreement_column(flt: ResultFilter):
    return Prediction.agreement if flt.model == ENSEMBLE else _ensemble.agreement


def _review_column(flt: ResultFilter):
    """The scan's review flag: on its ensemble row, whichever model's rows are shown."""
    return Prediction.needs_review if flt.model == ENSEMBLE else _ensemble.needs_review


def _needs_ensemble_join(flt: ResultFilter, rows: bool = False) -> bool:
    # Rows always carry the scan's review flag, so shown rows of another model need the join.
    return flt.model != ENSEMBLE and (rows or flt.min_agreement is not None or flt.max_agreement is not None
                                      or flt.needs_review is not None
                                      or flt.sort.removeprefix("-") == "agreement")


def _base_query(flt: ResultFilter, columns: tuple, rows: bool = False) -> Select:
    query = (select(*columns).join(Scan, Scan.id == Prediction.scan_id)
             # each row carries the scan's current review, if it has one
             .outerjoin(_current, _current.c.scan_id == Scan.id)
             .outerjoin(Review, Review.id == _current.c.review_id)
             .outerjoin(_reviewer, _reviewer.id == Review.user_id)
             .where(Prediction.model_name == flt.model, Scan.status == "classified",
                    # only the version that classified the scan, so re-runs never show twice
                    Prediction.model_version_id == Scan.model_version_id))
    if _needs_ensemble_join(flt, rows):
        query = query.outerjoin(_ensemble, and_(_ensemble.scan_id == Scan.id, _ensemble.model_name == ENSEMBLE,
                                                _ensemble.model_version_id == Scan.model_version_id))
    if flt.reviewed is not None:
        query = query.where(Review.id.is_not(None) if flt.reviewed else Review.id.is_(None))
    if flt.disagrees is not None:
        ensemble = aliased(Prediction)
        differs = exists().where(and_(ensemble.scan_id == Scan.id, ensemble.model_name == ENSEMBLE,
                                      ensemble.model_version_id == Scan.model_version_id,
                                      ensemble.label != Review.label))
        query = query.where(Review.id.is_not(None), differs if flt.disagrees else ~differs)
    if flt.label:
        query = query.where(Prediction.label == flt.label)
    if flt.min_confidence is not None:
        query = query.where(Prediction.confidence >= flt.min_confidence)
    if flt.max_confidence is not None:
        query = query.where(Prediction.confidence <= flt.max_confidence)
    if flt.min_agreement is not None:
        query = query.where(_agreement_column(flt) >= flt.min_agreement)
    if flt.max_agreement is not None:
        query = query.where(_agreement_column(flt) <= flt.max_agreement)
    if flt.model_version is not None:
        query = query.where(Scan.model_version_id == flt.model_version)
    if flt.needs_review is not None:
        query = query.where(_review_column(flt).is_(flt.needs_review))
    if flt.study:
        query = query.where(Scan.study == flt.study)
    if flt.job is not None:
        query = query.where(Scan.job_id == flt.job)
    if flt.since is not None:
        query = query.where(Scan.classified_at >= flt.since)
    if flt.until is not None:
        query = query.where(Scan.classified_at <= flt.until)
    return query


_ROW_COLUMNS = (Scan.id, Scan.job_id, Scan.path, Scan.study, Scan.frame, Scan.classified_at, Scan.reused,
                Prediction.model_name, Prediction.model_version_id, Prediction.label, Prediction.confidence,
                Prediction.probabilities, Prediction.agreement, Review.label, _reviewer.name, Review.created)


def _row_columns(flt: ResultFilter) -> tuple:
    """The row's columns; the last is the scan's review flag (row[16])."""
    return (*_ROW_COLUMNS, _review_column(flt))


def row_json(row: Any) -> dict[str, Any]:
    """One result row as the API shows it."""
    return {"scan_id": row[0], "job_id": row[1], "path": row[2], "study": row[3], "frame": row[4],
            "classified": iso(row[5]), "reused": row[6], "model": row[7], "model_version": row[8],
            "label": row[9], "confidence": row[10], "probabilities": row[11], "agreement": row[12],
            "reviewed_label": row[13], "reviewed_by": row[14], "reviewed_at": iso(row[15]),
            "needs_review": row[16]}


def _sort_columns(flt: ResultFilter) -> dict[str, Any]:
    return {"scan_id": Scan.id, "job_id": Scan.job_id, "path": Scan.path, "study": Scan.study,
            "label": Prediction.label, "confidence": Prediction.confidence, "agreement": _agreement_column(flt),
            "model_version": Scan.model_version_id, "classified": Scan.classified_at}


def ordered_rows(flt: ResultFilter) -> Select:
    """The rows of a results query in the filter's order (the same for a page and for an export)."""
    name = flt.sort.removeprefix("-")
    column = _sort_columns(flt)[name]
    # Missing values (an agreement of a row without one) last either way, as PostgreSQL and SQLite differ.
    key = column.desc().nulls_last() if flt.sort.startswith("-") else column.asc().nulls_last()
    order = (key,) if name == "scan_id" else (key, Scan.id.desc())
    return _base_query(flt, _row_columns(flt), rows=True).order_by(*order)


def count_query(flt: ResultFilter) -> Select:
    """The query counting the rows that match the filter (over all pages)."""
    return _base_query(flt, (func.count(Prediction.id),))


def count_results(session: Session, flt: ResultFilter) -> int:
    """How many rows match the filter (over all pages)."""
    return int(session.scalar(count_query(flt)) or 0)


def query_results(session: Session, flt: ResultFilter) -> dict[str, Any]:
    """One page of results plus the total count."""
    total = count_results(session, flt)
    rows = session.execute(ordered_rows(flt).limit(flt.limit).offset(flt.offset)).all()
    return {"total": total, "limit": flt.limit, "offset": flt.offset,
            "page": flt.offset // flt.limit + 1, "per_page": flt.limit, "model": flt.model,
            "results": [row_json(r) for r in rows]}


def known_classes(session: Session) -> list[str]:
    """Class names over every model version, in manifest order (CSV probability columns)."""
    classes: list[str] = []
    for manifest in session.execute(select(ModelVersion.manifest).order_by(ModelVersion.id)).scalars():
        for name in (manifest or {}).get("classes", []):
            if name not in classes:
                classes.append(name)
    return classes
