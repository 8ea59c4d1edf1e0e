"""What the review queue's partial index (migration 0007) buys: the results query for
`needs_review=true` on a large table, with and without the index, in one run.

    python -m bench.review_queue [--scans 100000] [--review-share 0.05] [--repeats 7] [--json]

Makes a temporary PostgreSQL database at the head migration, fills it with `--scans` classified
scans of one model version, six prediction rows each (five models and the ensemble), a share of
the ensemble rows flagged needs_review, then times `web.queries.query_results` (the query behind
`GET /api/v1/results?needs_review=true`: the count and the first page of 50) and the count alone
(what the job page shows), median of `--repeats`, first with the index, then after dropping it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(REPO))

from bench.service import DEFAULT_PG, temporary_database  # noqa: E402

MODELS = ("resnet50", "vgg16", "custom_cnn", "svm", "random_forest", "ensemble")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.review_queue", description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=100_000)
    parser.add_argument("--review-share", type=float, default=0.05, help="share of scans flagged for review")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--postgres-url", default=DEFAULT_PG, help="server where a temporary database is made")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    if args.scans < 1 or not 0 < args.review_share < 1 or args.repeats < 1:
        parser.error("--scans and --repeats must be positive and --review-share between 0 and 1")
    return args


def fill(connection: Any, scans: int, share: float) -> None:
    """One job, one active version, `scans` classified scans and six predictions each, in SQL."""
    every = max(1, round(1 / share))
    connection.exec_driver_sql(
        "INSERT INTO model_versions (id, digest, bundle_path, manifest, backbone_weights, metrics, status, created) "
        "VALUES (1, repeat('a', 64), '/b', '{}', 'none', '{}', 'active', now())")
    connection.exec_driver_sql(
        "INSERT INTO jobs (id, source, name, status, status_detail, sealed, total, done, failed, reused, created) "
        f"VALUES (1, 'upload', 'bench', 'done', '', true, {scans}, {scans}, 0, 0, now())")
    connection.exec_driver_sql(
        "INSERT INTO scans (id, job_id, sha256, frame, path, study, status, error, attempts, reused, "
        "model_version_id, created, classified_at) "
        "SELECT g, 1, md5(g::text) || md5((-g)::text), 0, 'study/' || g || '.png', 'study', 'classified', '', 1, "
        f"false, 1, now(), now() - (g || ' seconds')::interval FROM generate_series(1, {scans}) g")
    models = ", ".join(f"('{m}')" for m in MODELS)
    connection.exec_driver_sql(
        "INSERT INTO predictions (scan_id, model_version_id, model_name, label, confidence, probabilities, "
        "agreement, needs_review, created) "
        "SELECT g, 1, m.name, 'glioma', 0.5 + mod(g, 50) / 100.0, '{\"glioma\": 0.9}', 5, "
        f"CASE WHEN m.name = 'ensemble' THEN mod(g, {every}) = 0 END, now() "
        f"FROM generate_series(1, {scans}) g CROSS JOIN (VALUES {models}) AS m(name)")
    connection.exec_driver_sql("ANALYZE")


def timed(action: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(median milliseconds, last result) of `repeats` calls after one warm-up call."""
    action()
    samples, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), result


def measure(session_factory: Any, repeats: int) -> dict[str, Any]:
    """Median times of the review-queue page and count on the database as it is."""
    from web.queries import count_results, parse_filter, query_results

    flt = parse_filter({"needs_review": "true"})
    with session_factory() as session:
        page_ms, page = timed(lambda: query_results(session, flt), repeats)
        count_ms, _ = timed(lambda: count_results(session, flt), repeats)
    return {"page_ms": round(page_ms, 2), "count_ms": round(count_ms, 2), "flagged": page["total"],
            "page_rows": len(page["results"])}


def uses_index(connection: Any) -> bool:
    """Whether PostgreSQL can answer the review-queue count from the partial index (its predicate
    must follow from the query's WHERE), with sequential scans priced out so size does not decide."""
    from web.queries import count_query, parse_filter

    sql = str(count_query(parse_filter({"needs_review": "true"})).compile(connection, compile_kwargs={"literal_binds": True}))
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    plan = "\n".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + sql.replace("%", "%%")))
    return "ix_predictions_review_queue" in plan


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fill a temporary database and time the review queue with and without the partial index."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from db.migrate import upgrade

    url, drop = temporary_database(args.postgres_url)
    try:
        upgrade(url)
        engine = create_engine(url)
        started = time.perf_counter()
        with engine.begin() as connection:
            fill(connection, args.scans, args.review_share)
        filled_s = time.perf_counter() - started
        factory = sessionmaker(engine)
        with engine.begin() as connection:
            planned = uses_index(connection)
        with_index = measure(factory, args.repeats)
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP INDEX ix_predictions_review_queue")
            connection.exec_driver_sql("ANALYZE predictions")
        without_index = measure(factory, args.repeats)
        engine.dispose()
    finally:
        drop()
    return {"scans": args.scans, "prediction_rows": args.scans * len(MODELS), "review_share": args.review_share,
            "fill_seconds": round(filled_s, 1), "plan_uses_index": planned, "with_index": with_index, "without_index": without_index,
            "page_speedup": round(without_index["page_ms"] / with_index["page_ms"], 2),
            "count_speedup": round(without_index["count_ms"] / with_index["count_ms"], 2)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['scans']:,} classified scans ({result['prediction_rows']:,} prediction rows), "
          f"{result['with_index']['flagged']:,} flagged for review")
    for name in ("with_index", "without_index"):
        r = result[name]
        print(f"{name.replace('_', ' '):14} page of 50 + count {r['page_ms']:8.2f} ms   count alone {r['count_ms']:8.2f} ms")
    print(f"the query plan {'uses' if result['plan_uses_index'] else 'does NOT use'} ix_predictions_review_queue")
    print(f"index: {result['page_speedup']}x faster page, {result['count_speedup']}x faster count")
    return 0


if __name__ == "__main__":
    sys.exit(main())
