"""mri-classify: submit scans, follow a job, export results, from a shell.

The service's URL and token come from MRI_URL / MRI_TOKEN or the config file
(~/.config/mri-classify/config, mode 600), never from the command line.

Exit codes: 0 done; 1 unexpected answer; 2 usage or configuration; 3 not authorized (401/403);
4 not found (404); 5 refused by the service (400/409/413/415/422) or files refused;
6 the service cannot be reached or is unavailable (after retries); 130 interrupted.
"""
from __future__ import annotations

import argparse
import csv
import getpass
import json
import os
import sys
import time
from typing import Any, Callable, Iterator, Mapping, TextIO

from client import __version__
from client.api import Api, ApiError, NetworkError
from client.config import ConfigError, config_path, load_config, write_config
from client.files import InputError, LocalFile, collect
from client.upload import (DEFAULT_PART_FILES, DEFAULT_PART_MB, Outcome, Uploader, UploadState, missing_files,
                           state_dir)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4, 5, 6
EXIT_INTERRUPTED = 130
# Options that would put a secret (or where to send it) into `ps` and the shell history.
SECRET_OPTIONS = ("--token", "--url", "--password", "--api-key", "--server")
MODELS = ("resnet50", "vgg16", "custom_cnn", "svm", "random_forest")
POLL_FIRST_S, POLL_GROWTH, POLL_MAX_S = 1.0, 1.5, 5.0
STREAM_RECONNECT_S = 2.0  # the stream's own `retry:` hint


class Fail(Exception):
    """Stop with this message and exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def err(message: str) -> None:
    """A line for the person, on stderr (stdout carries results only)."""
    print(f"mri-classify: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- arguments


def _either(parser: argparse.ArgumentParser, dest: str, yes: tuple[str, str], no: tuple[str, str]) -> None:
    """Two exclusive flags setting the API filter `dest` to "true" or "false": (flag, help) each."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(yes[0], action="store_const", const="true", dest=dest, help=yes[1])
    group.add_argument(no[0], action="store_const", const="false", dest=dest, help=no[1])


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(
        prog="mri-classify", allow_abbrev=False,
        description="Classify brain MRI scans with the batch service's HTTP API.",
        epilog="The service URL and token come from MRI_URL and MRI_TOKEN, or from the config file "
               "(MRI_CONFIG, default ~/.config/mri-classify/config, mode 600; `mri-classify configure` writes "
               "it). They are never taken as arguments. Exit codes: 0 ok, 2 usage/config, 3 not authorized, "
               "4 not found, 5 refused, 6 unreachable/unavailable, 130 interrupted.")
    top.add_argument("--version", action="version", version=f"mri-classify {__version__}")
    top.add_argument("--retries", type=int, default=5, metavar="N",
                     help="retries of a request that failed in passing (network, 429, 502-504; default 5)")
    top.add_argument("--backoff", type=float, default=1.0, metavar="SECONDS",
                     help="first wait before a retry, doubled each time up to 30 s (default 1)")
    top.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                     help="longest wait for one answer (default 300)")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", allow_abbrev=False,
                                 help="upload folders, zips or files as one job and print its URL",
                                 description="Upload folders, zips or files as one job. A folder's files keep "
                                             "their paths under the folder's name, which becomes their study "
                                             "(name several study folders to send several studies). An "
                                             "interrupted upload resumes when the same command runs again: only "
                                             "the files the job does not hold (by SHA-256) are sent.")
    submit.add_argument("inputs", nargs="+", metavar="FOLDER|ZIP|FILE")
    submit.add_argument("--wait", action="store_true", help="follow the job until every scan is done")
    submit.add_argument("--resume", type=int, metavar="JOB", help="add the missing files to this open job")
    submit.add_argument("--new", action="store_true", help="start a new job even if an upload of the same "
                                                           "inputs was interrupted")
    submit.add_argument("--part-files", type=int, default=DEFAULT_PART_FILES, metavar="N",
                        help=f"files per request (default {DEFAULT_PART_FILES})")
    submit.add_argument("--part-mb", type=float, default=DEFAULT_PART_MB, metavar="MB",
                        help=f"megabytes per request (default {DEFAULT_PART_MB}; a larger file goes alone)")
    submit.add_argument("--no-progress", action="store_true", help="no progress bar")

    status = commands.add_parser("status", allow_abbrev=False, help="a job's state and counts")
    status.add_argument("job", type=int, metavar="JOB")
    status.add_argument("--json", action="store_true", help="print the service's JSON")
    status.add_argument("--wait", action="store_true", help="follow the job until every scan is done")

    results = commands.add_parser(
        "results", allow_abbrev=False, help="a job's results, or stored results filtered; as a table, CSV or JSON",
        description="Without filters: every scan of JOB (GET /api/v1/jobs/JOB/results), failed ones included. "
                    "With filters (JOB optional): the classified scans that match (GET /api/v1/results).")
    results.add_argument("job", type=int, nargs="?", metavar="JOB")
    results.add_argument("--label", help="predicted label (of --model)")
    results.add_argument("--model", choices=("ensemble", *MODELS), help="whose prediction (default ensemble)")
    results.add_argument("--min-confidence", type=float, metavar="P", help="least confidence, 0 to 1")
    results.add_argument("--max-confidence", type=float, metavar="P", help="greatest confidence, 0 to 1")
    results.add_argument("--min-agreement", type=int, metavar="N", help="least models (of 5) agreeing with the ensemble")
    results.add_argument("--max-agreement", type=int, metavar="N",
                         help="greatest models agreeing (4: the scans the models disagree on)")
    results.add_argument("--model-version", type=int, metavar="ID", help="classified by this model version")
    results.add_argument("--sort", metavar="FIELD", help="sort by a row field, - first for descending (e.g. -confidence)")
    results.add_argument("--study", help="exact study name")
    results.add_argument("--since", metavar="TIME", help="classified at or after (ISO 8601)")
    results.add_argument("--until", metavar="TIME", help="classified at or before (ISO 8601)")
    _either(results, "reviewed", ("--reviewed", "only scans with a current review"),
            ("--not-reviewed", "only scans without one"))
    _either(results, "disagrees", ("--disagrees", "reviewed label differs from the ensemble's"),
            ("--agrees", "reviewed label agrees with the ensemble's"))
    _either(results, "needs_review",
            ("--needs-review", "only scans the review rule flagged (low calibrated confidence or too few models agree)"),
            ("--accepted", "only scans the review rule accepted"))
    output = results.add_mutually_exclusive_group()
    output.add_argument("--csv", metavar="FILE", help="write CSV to FILE (- for stdout)")
    output.add_argument("--json", action="store_true", help="print JSON")

    commands.add_parser("configure", allow_abbrev=False,
                        help="write the config file (URL and token, asked for on the terminal)")
    return top


def refuse_secret_options(argv: list[str]) -> None:
    """A token (or URL) on the command line is refused before anything else, without echoing it."""
    for arg in argv:
        name = arg.split("=", 1)[0]
        # argparse would echo an unknown option's value in its error; prefixes of the names too
        if name in SECRET_OPTIONS or any(len(name) > 4 and option.startswith(name) for option in SECRET_OPTIONS):
            raise Fail(f"{name} is not an option: the token and the service URL are never taken on the command "
                       "line (they would show in `ps` and in the shell history). Set MRI_TOKEN and MRI_URL, "
                       "or put them in the config file (`mri-classify configure`).", EXIT_USAGE)


# --------------------------------------------------------------------------- commands


def job_page(api: Api, job: int) -> str:
    """The job's page in the browser."""
    return f"{api.url}/jobs/{job}"


def cmd_submit(api: Api, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Upload, resuming an interrupted upload of the same inputs; seal; print the job URL."""
    try:
        files = collect(args.inputs)
    except InputError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None
    if not files:
        raise Fail("nothing to upload: the inputs hold no files (desktop litter is skipped)", EXIT_USAGE)
    state = UploadState.for_upload(state_dir(environ), api.url, args.inputs)
    job = args.resume or (None if args.new else state.job())
    todo: list[LocalFile] = files
    if job is not None:
        job, todo = _resume(api, job, files, explicit=args.resume is not None, state=state)
    total_mib = sum(f.size for f in todo) / 2**20  # as the progress bar counts
    if job is not None:
        err(f"job {job}: {len(files) - len(todo)} of {len(files)} files already there; sending {len(todo)} "
            f"({total_mib:.1f} MiB)")
    else:
        err(f"sending {len(files)} files ({total_mib:.1f} MiB)")
    outcome = Outcome(job=job or 0)
    if todo:
        outcome = _upload(api, args, todo, job, state)
    if not outcome.job:
        raise Fail(f"the service refused every file ({len(outcome.refused)}); nothing was created", EXIT_REFUSED)
    sealed = Uploader(api).close(outcome.job)
    state.forget()
    err(f"job {outcome.job} sealed: {sealed['total']} scans ({outcome.sent} files sent now)")
    if outcome.refused:
        err(f"{len(outcome.refused)} file(s) refused:")
        for path, reason in outcome.refused:
            err(f"  {path}: {reason}")
    print(job_page(api, outcome.job), flush=True)
    code = EXIT_REFUSED if outcome.refused else EXIT_OK
    if args.wait:
        final = wait_for(api, outcome.job, progress=not args.no_progress)
        _print_summary(final)
    return code


def _resume(api: Api, job: int, files: list[LocalFile], explicit: bool,
            state: UploadState) -> tuple[int | None, list[LocalFile]]:
    """(job, files it lacks); (None, all files) when an interrupted upload's job is gone."""
    try:
        held = Uploader(api).held(job)
    except ApiError as exc:
        if exc.status == 404 and not explicit:
            err(f"the interrupted upload's job {job} no longer exists; starting a new job")
            state.forget()
            return None, files
        raise
    todo = missing_files(files, held["files"])
    if held["sealed"]:
        if todo:
            raise Fail(f"job {job} is closed and lacks {len(todo)} of these files; send them as a new job "
                       "with --new", EXIT_REFUSED)
        err(f"job {job} already holds every file")
    return job, todo


def _upload(api: Api, args: argparse.Namespace, todo: list[LocalFile], job: int | None,
            state: UploadState) -> Outcome:
    bar = _bar(sum(f.size for f in todo), len(todo), disable=args.no_progress)

    def on_job(new_job: int) -> None:
        state.remember(api.url, new_job, args.inputs)
        bar.write(f"mri-classify: job {new_job} created: {job_page(api, new_job)}", file=sys.stderr)

    def progress(count: int, size: int) -> None:
        bar.update(size)
        bar.set_postfix(files=f"{bar.files_done + count}/{len(todo)}", refresh=False)
        bar.files_done += count

    uploader = Uploader(api, part_files=args.part_files, part_mb=args.part_mb,
                        say=lambda line: bar.write(f"mri-classify: {line}", file=sys.stderr), progress=progress)
    try:
        return uploader.send(todo, job, on_job)
    except (NetworkError, ApiError, KeyboardInterrupt):
        resumed = state.job()
        if resumed is not None:
            err(f"upload interrupted ({bar.files_done} of {len(todo)} files sent to job {resumed}); run the same "
                f"command again to send the rest (or: mri-classify submit --resume {resumed} ...)")
        raise
    finally:
        bar.close()


def _bar(total_bytes: int, total_files: int, disable: bool) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="upload", file=sys.stderr,
               disable=True if disable else None, dynamic_ncols=True)
    bar.files_done = 0
    return bar


def wait_for(api: Api, job: int, progress: bool = True) -> dict:
    """Follow the job until it is done and return its status: on its event stream, where the service
    pushes each change; else (streams refused, or cut) by polling with its ETag, backing off while
    unchanged."""
    from tqdm import tqdm

    said = ""
    bar = None

    def show(status: dict) -> bool:
        nonlocal bar, said
        if bar is None:
            bar = tqdm(total=status["total"], unit="scan", desc=f"job {job}", file=sys.stderr,
                       disable=None if progress else True, dynamic_ncols=True)
        bar.total = status["total"]
        bar.n = status["done"] + status["failed"]
        bar.refresh()
        if status["detail"] and status["detail"] != said:
            said = status["detail"]
            bar.write(f"mri-classify: job {job}: {said}", file=sys.stderr)
        return status["status"] == "done"

    try:
        try:
            for status in status_events(api, job):
                if show(status):
                    return status
        except StreamUnavailable:
            pass
        return _poll_until_done(api, job, show)
    finally:
        if bar is not None:
            bar.close()


class StreamUnavailable(Exception):
    """The job's event stream is refused (too many open, an older service) or was cut."""


def status_events(api: Api, job: int) -> Iterator[dict]:
    """The job's statuses from GET /api/v1/jobs/<job>/events, one per change, reconnecting when the
    service ends a long stream, until the done status; StreamUnavailable where it cannot stream."""
    import requests

    while True:
        heard = False
        try:
            # The read timeout is well over the 15 s between the stream's keep-alive lines.
            response = api.session.get(f"{api.url}/api/v1/jobs/{job}/events", stream=True, timeout=(10, 60))
        except requests.RequestException as exc:
            raise StreamUnavailable(str(exc)) from None
        with response:
            if response.status_code == 404:
                raise ApiError(404, "not_found", f"job {job} does not exist", "GET", response.url)
            if response.status_code != 200 or not response.headers.get("Content-Type", "").startswith(
                    "text/event-stream"):
                raise StreamUnavailable(f"HTTP {response.status_code}")
            name, data = "", ""
            try:
                for line in response.iter_lines(decode_unicode=True):
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line == "" and name:
                        if name == "gone":
                            raise ApiError(404, "not_found", json.loads(data)["detail"], "GET", response.url)
                        if name == "status":
                            heard = True
                            status = json.loads(data)
                            yield status
                            if status["status"] == "done":
                                return
                        name, data = "", ""
            except requests.RequestException as exc:
                raise StreamUnavailable(str(exc)) from None
        if not heard:
            raise StreamUnavailable("the stream ended before any status")
        # The service ends a stream after a few minutes: open a new one, as a browser does.
        time.sleep(STREAM_RECONNECT_S)


def _poll_until_done(api: Api, job: int, show: Callable[[dict], bool]) -> dict:
    tag, delay = None, POLL_FIRST_S
    while True:
        response = api.request("GET", f"/api/v1/jobs/{job}", headers={"If-None-Match": tag} if tag else {})
        if response.status_code == 304:
            delay = min(delay * POLL_GROWTH, POLL_MAX_S)
        else:
            status, tag, delay = response.json(), response.headers.get("ETag"), POLL_FIRST_S
            if show(status):
                return status
        time.sleep(delay)


def _print_summary(status: dict) -> None:
    err(f"job {status['id']} {status['status']}: {status['done']} classified, {status['failed']} failed "
        f"of {status['total']}")


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    """A job's state and counts."""
    status = wait_for(api, args.job, progress=True) if args.wait else api.get_json(f"/api/v1/jobs/{args.job}")
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    name = f" ({status['name']})" if status.get("name") else ""
    print(f"job {status['id']}{name}: {status['status']}{'' if status['sealed'] else ', open for more files'}")
    print(f"scans: {status['total']} total, {status['done']} classified, {status['failed']} failed, "
          f"{status['total'] - status['done'] - status['failed']} waiting ({status['progress']:.0%})")
    print(f"created {status['created']}, started {status['started'] or '-'}, finished {status['finished'] or '-'}")
    if status["detail"]:
        print(f"detail: {status['detail']}")
    print(job_page(api, status["id"]))
    return EXIT_OK


FILTERS = ("label", "model", "min_confidence", "max_confidence", "min_agreement", "max_agreement", "model_version",
           "study", "since", "until", "reviewed", "disagrees", "needs_review", "sort")


def cmd_results(api: Api, args: argparse.Namespace) -> int:
    """A job's scans, or filtered stored results: table, CSV or JSON."""
    filters = {name: getattr(args, name) for name in FILTERS if getattr(args, name) is not None}
    if not filters and args.job is None:
        raise Fail("name a JOB, or filter (e.g. --label glioma --min-confidence 0.9)", EXIT_USAGE)
    if filters:
        params = {**filters, **({"job": args.job} if args.job is not None else {})}
        if args.csv:
            return _stream_csv(api, params, args.csv)
        rows = list(_all_results(api, params))
        columns = ("scan_id", "job_id", "path", "study", "model", "label", "confidence", "agreement",
                   "needs_review", "reviewed_label")
    else:
        body = api.get_json(f"/api/v1/jobs/{args.job}/results")
        rows = [_scan_row(scan) for scan in body["scans"]]
        columns = ("scan_id", "path", "study", "status", "label", "confidence", "agreement", "error")
        if args.csv:
            # The service's class list (as its /results CSV uses), so a job with nothing classified
            # yet has the same columns; an older service without it: the classes its scans show.
            classes = body.get("classes") or sorted({c for scan in body["scans"] for c in (
                (scan.get("ensemble") or {}).get("probabilities") or {})})
            with _open_output(args.csv) as out:
                _write_scan_csv(out, body["scans"], classes)
            return EXIT_OK
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, columns)
    return EXIT_OK


def _all_results(api: Api, params: dict) -> Iterator[dict]:
    offset = 0
    while True:
        page = api.get_json("/api/v1/results", params={**params, "limit": 1000, "offset": offset})
        yield from page["results"]
        offset += len(page["results"])
        if not page["results"] or offset >= page["total"]:
            return


def _stream_csv(api: Api, params: dict, target: str) -> int:
    response = api.request("GET", "/api/v1/results", params={**params, "format": "csv"}, stream=True)
    with _open_output(target) as out:
        for chunk in response.iter_content(chunk_size=65536, decode_unicode=True):
            out.write(chunk)
    return EXIT_OK


class _open_output:
    """A CSV target: a file (newline handling left to csv) or stdout for `-`."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.handle: TextIO | None = None

    def __enter__(self) -> TextIO:
        self.handle = sys.stdout if self.target == "-" else open(self.target, "w", newline="", encoding="utf-8")
        return self.handle

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None and self.handle is not sys.stdout:
            self.handle.close()


def _scan_row(scan: dict) -> dict:
    ensemble = scan.get("ensemble") or {}
    return {"scan_id": scan["id"], "path": scan["path"], "study": scan["study"], "frame": scan["frame"],
            "status": scan["status"], "error": scan["error"], "model_version": scan["model_version"],
            "label": ensemble.get("label", ""), "confidence": ensemble.get("confidence", ""),
            "agreement": ensemble.get("agreement", ""),
            **{f"{m}_label": (scan["predictions"].get(m) or {}).get("label", "") for m in MODELS}}


def _write_scan_csv(out: TextIO, scans: list[dict], classes: list[str]) -> None:
    writer = csv.writer(out)
    head = ["scan_id", "path", "study", "frame", "status", "error", "model_version", "label", "confidence",
            "agreement", *[f"{m}_label" for m in MODELS], *[f"p_{c}" for c in classes]]
    # the review columns and needs_review come last, as in the /results CSV (a service without
    # them leaves them empty)
    writer.writerow([*head, "reviewed_label", "reviewed_by", "reviewed_at", "needs_review"])
    for scan in scans:
        row = _scan_row(scan)
        probabilities = (scan.get("ensemble") or {}).get("probabilities") or {}
        confidence = row["confidence"]
        row["confidence"] = f"{confidence:.6f}" if isinstance(confidence, float) else confidence
        review = scan.get("review") or {}
        writer.writerow([*(_cell(row[k]) for k in head[:len(head) - len(classes)]),
                         *[f"{probabilities[c]:.6f}" if c in probabilities else "" for c in classes],
                         review.get("label") or "", _cell(review.get("by") or ""), review.get("at") or "",
                         _flag((scan.get("ensemble") or {}).get("needs_review"))])


def _flag(value: Any) -> Any:
    # 1 / 0 as the /results CSV writes it; empty where unknown (not classified, or no review rule)
    return "" if value is None else int(bool(value))


def _cell(value: Any) -> Any:
    # Spreadsheets run a cell starting with these as a formula; paths come from whoever uploaded.
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


def _print_table(rows: list[dict], columns: tuple[str, ...]) -> None:
    def text(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return "" if value is None else str(value)

    cells = [[text(row.get(c)) for c in columns] for row in rows]
    widths = [min(max([len(c), *(len(r[i]) for r in cells)]), 60) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        print("  ".join(v[:w].ljust(w) for v, w in zip(row, widths)).rstrip())
    err(f"{len(rows)} row(s)")


def cmd_configure(environ: Mapping[str, str], ask: Callable[[str], str] = input,
                  ask_secret: Callable[[str], str] = getpass.getpass) -> int:
    """Ask for the URL and the token (hidden) and write the config file, mode 600."""
    path = config_path(environ)
    url = ask("Service URL (e.g. http://127.0.0.1:5000): ").strip().rstrip("/")
    token = ask_secret("Token (not shown): ").strip()
    if not url.startswith(("http://", "https://")) or not token:
        raise Fail("a URL starting with http:// or https:// and a token are both needed", EXIT_USAGE)
    write_config(path, url, token)
    err(f"wrote {path} (mode 600)")
    return EXIT_OK


# --------------------------------------------------------------------------- main


def exit_code_for(exc: ApiError) -> int:
    """The exit code of an error answer."""
    if exc.status in (401, 403):
        return EXIT_AUTH
    if exc.status == 404:
        return EXIT_NOT_FOUND
    if exc.status in (502, 503, 504, 429):
        return EXIT_UNAVAILABLE
    if 400 <= exc.status < 500:
        return EXIT_REFUSED
    return EXIT_ERROR


def explain(exc: ApiError, config_from: str) -> str:
    """A sentence for the person, naming what to do where that is clear."""
    if exc.status == 401:
        return f"not authorized ({exc.detail}); check the token (from {config_from})"
    if exc.status == 403:
        return f"forbidden: {exc.detail}"
    if exc.status == 503 and exc.error == "database_unavailable":
        return "the service's database is unavailable right now; try again shortly"
    return f"{exc.status} {exc.error}: {exc.detail}"


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    try:
        refuse_secret_options(argv)
        args = parser().parse_args(argv)
        if args.command == "configure":
            return cmd_configure(environ)
        config = load_config(environ)
        api = Api(config.url, config.token, retries=args.retries, backoff_s=args.backoff, timeout_s=args.timeout,
                  say=err)
        if args.command == "submit":
            return cmd_submit(api, args, environ)
        if args.command == "status":
            return cmd_status(api, args)
        return cmd_results(api, args)
    except Fail as exc:
        err(str(exc))
        return exc.code
    except ConfigError as exc:
        err(str(exc))
        return EXIT_USAGE
    except ApiError as exc:
        err(explain(exc, config.token_from))
        return exit_code_for(exc)
    except NetworkError as exc:
        err(f"cannot reach the service: {exc}")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `mri-classify results 3 | head`
        return EXIT_OK
