"""`make run`: bring the whole service up on one machine and stop all of it on Ctrl-C.

Steps: DATA_DIR and its secret key, a broker (a Redis that answers, a private
redis-server, or Celery's filesystem transport), migrations, then web, an inference
worker (-Q inference,default), a training worker (-Q training) and beat in their own
process groups; an admin token; and, when TRAINING_DATA_DIR holds a labelled folder
and nothing is trained or training yet, a quick first training run and then the full one.
Run it with the project's virtualenv Python (the Makefile does).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python scripts/run_local.py` as well as `python -m scripts.run_local`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.local_env import (BrokerChoice, choose_broker, ensure_data_dir, ensure_database, ensure_secret_key,
                               labelled_classes, private_redis_command, run_checked, wait_for_redis)
from scripts.procs import Supervisor, tail
from scripts.recover import resend_open_work
from scripts.service_state import ServiceWatcher, database_url, read_state

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN_FILE = "admin_token"
ENV_FILE = "local.env"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def say(message: str) -> None:
    """One short status line for the person at the terminal."""
    print(f"[make run] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (environment variables give the defaults)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "var"))
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    parser.add_argument("--broker", choices=["auto", "redis", "private-redis", "filesystem"],
                        default=os.environ.get("LOCAL_BROKER", "auto"),
                        help="auto: a Redis that answers, else a private redis-server, else files")
    parser.add_argument("--web-server", choices=["gunicorn", "flask"], default="gunicorn")
    parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    # Each open status stream holds a thread: more threads than JOB_EVENTS_MAX_STREAMS (40)
    # leave some for ordinary requests; idle threads cost only their stacks.
    parser.add_argument("--web-threads", type=int, default=int(os.environ.get("WEB_THREADS", "48")))
    parser.add_argument("--no-train", action="store_true",
                        help="never queue a first training run, even if TRAINING_DATA_DIR is set")
    parser.add_argument("--ready-file", type=Path,
                        help="write {url, token, pids, broker} as JSON here once the service is up")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--stop-grace", type=float, default=15.0,
                        help="seconds each process gets to stop before it is killed")
    return parser.parse_args(argv)


def child_env(data_dir: Path) -> dict[str, str]:
    """The environment every child gets: the caller's plus the local-run defaults."""
    env = dict(os.environ)
    env["DATA_DIR"] = str(data_dir)
    env.setdefault("APP_ENV", "development")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    # `celery -A workers` imports the app with the cwd on sys.path only for that import;
    # the lazily built app imports config/ later, so the repository must be on the path.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    # The children are the venv's own console scripts; make sure they are found first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def tool(name: str) -> str:
    """Path of a console script installed beside this Python (flask, celery, gunicorn)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def pick_broker(args: argparse.Namespace, env: dict[str, str]) -> BrokerChoice:
    """Apply --broker on top of the automatic choice."""
    redis_url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    if args.broker == "filesystem":
        return BrokerChoice("filesystem", "filesystem://", "--broker filesystem was asked for")
    if args.broker == "private-redis":
        return BrokerChoice("private-redis", "", "--broker private-redis was asked for")
    choice = choose_broker(redis_url, env.get("BROKER_URL", ""))
    if args.broker == "redis" and choice.kind != "redis":
        raise RuntimeError(f"--broker redis: no Redis answers at {redis_url}")
    return choice


def shared_redis_prefix(data_dir: Path) -> str:
    """The BROKER_KEY_PREFIX `make run` uses on a shared Redis: stable for one DATA_DIR."""
    return "mri-" + hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:10] + ":"


def start_broker(choice: BrokerChoice, sup: Supervisor, env: dict[str, str], data_dir: Path,
                 logs: Path) -> None:
    """Start a private Redis if chosen, and point the children's environment at the broker."""
    if choice.kind == "private-redis":
        argv, url = private_redis_command(data_dir)
        sup.start("redis", argv, env, logs / "redis.log")
        if not wait_for_redis(url):
            raise RuntimeError(f"private redis-server did not answer at {url}:\n{tail(logs / 'redis.log')}")
        env["REDIS_URL"] = url
        env.pop("BROKER_URL", None)
    elif choice.kind == "redis":
        env["REDIS_URL"] = choice.url
        env.pop("BROKER_URL", None)
        # A Redis that was already running may serve other installs too: without a prefix of its
        # own, tasks left unacknowledged here would be delivered to their workers (and theirs to
        # ours). One per DATA_DIR, so a restart still finds its own unfinished messages.
        env.setdefault("BROKER_KEY_PREFIX", shared_redis_prefix(data_dir))
    elif choice.kind == "filesystem":
        env["BROKER_URL"] = "filesystem://"
    # "configured": BROKER_URL is already in env.


def start_services(args: argparse.Namespace, sup: Supervisor, env: dict[str, str], data_dir: Path,
                   logs: Path) -> str:
    """Start web, the inference and training workers, and beat; return the base URL."""
    bind = f"{args.host}:{args.port}"
    if args.web_server == "gunicorn":
        web = [tool("gunicorn"), "--bind", bind, "--workers", str(args.web_workers), "--threads", str(args.web_threads),
               "-c", "python:web.gunicorn_config",
               "--timeout", "600", "--graceful-timeout", "10", "--access-logfile", "-", "web:create_app()"]
    else:
        web = [tool("flask"), "--app", "web", "run", "--host", args.host, "--port", str(args.port),
               "--no-reload", "--with-threads"]
    sup.start("web", web, env, logs / "web.log", cwd=REPO_ROOT)
    # Solo pools: TensorFlow stays in one process per worker that uses all cores, and never
    # forks. Training has a worker of its own so a retraining run (hours on a CPU) never
    # blocks inference; each loads TensorFlow only when it first gets work, so an idle
    # training worker costs a plain Python process.
    for name, queues, node in (("worker", "inference,default", "local"),
                               ("worker-training", "training", "training")):
        argv = [tool("celery"), "-A", "workers", "worker", "-Q", queues, "--pool", "solo",
                "-n", f"{node}@%h", "--loglevel", env.get("LOG_LEVEL", "INFO")]
        sup.start(name, argv, env, logs / f"{name}.log", cwd=REPO_ROOT)
    beat = [tool("celery"), "-A", "workers", "beat", "--loglevel", env.get("LOG_LEVEL", "INFO"),
            "--schedule", str(data_dir / "celerybeat-schedule")]
    sup.start("beat", beat, env, logs / "beat.log", cwd=REPO_ROOT)
    return f"http://{args.host}:{args.port}"


def http(method: str, url: str, token: str | None = None, body: dict | None = None,
         timeout_s: float = 10.0) -> tuple[int, Any]:
    """A small JSON HTTP call; returns (status, parsed body or text)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_healthy(base_url: str, sup: Supervisor, timeout_s: float, stop: dict[str, bool]) -> None:
    """Wait for /healthz to answer 200 while every child stays alive."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stop["requested"]:
            raise KeyboardInterrupt
        dead = sup.exited()
        if dead is not None:
            raise RuntimeError(f"{dead.name} exited with {dead.process.returncode} during startup:\n"
                               f"{tail(dead.log_path)}")
        try:
            if http("GET", f"{base_url}/healthz", timeout_s=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{base_url}/healthz did not answer within {timeout_s:.0f} s")


def write_env_file(data_dir: Path, env: dict[str, str]) -> Path:
    """DATA_DIR/local.env: what a second shell sources so CLI commands reach this run's broker and data."""
    lines = ["# Written by `make run`; `source` it before flask/celery commands in another shell."]
    for name in ("DATA_DIR", "DATABASE_URL", "REDIS_URL", "BROKER_URL", "BROKER_KEY_PREFIX", "TRAINING_DATA_DIR",
                 "PYTHONPATH"):
        if env.get(name):
            lines.append(f"export {name}={shlex.quote(env[name])}")
        else:
            lines.append(f"unset {name}")
    path = data_dir / ENV_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def admin_token(base_url: str, env: dict[str, str], data_dir: Path) -> str:
    """Reuse the token kept in DATA_DIR/admin_token if it still works, else create one."""
    path = data_dir / TOKEN_FILE
    if path.is_file():
        token = path.read_text().strip()
        if token and http("GET", f"{base_url}/api/v1/models", token)[0] == 200:
            return token
    out = run_checked([tool("flask"), "--app", "web", "create-token", "admin", "--role", "admin"],
                      env, "flask --app web create-token admin --role admin")
    token = out.strip().splitlines()[-1].strip()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def maybe_queue_training(base_url: str, token: str, env: dict[str, str]) -> None:
    """Queue a first model when TRAINING_DATA_DIR is labelled and nothing exists yet: a quick run
    (minutes on a CPU, profile "quick") so jobs can start, then the full run, which the training
    worker takes next and the gate promotes over the quick version when it is not worse."""
    folder = env.get("TRAINING_DATA_DIR")
    if not folder:
        say("TRAINING_DATA_DIR is not set: no training will be queued. Jobs wait until a model "
            "version is active (see README: training a model / registering a bundle).")
        return
    classes = labelled_classes(Path(folder))
    if not classes:
        say(f"TRAINING_DATA_DIR={folder} has no labelled class folders: no training queued.")
        return
    state = read_state(env)
    if state.open_runs:
        say(f"training run #{state.open_runs[0]} is already queued or running.")
        return
    if state.full_versions:
        say(f"{state.versions} model version(s) exist (active: {state.active or 'none'}); "
            "no first training run needed.")
        return
    params = first_run_params(env)
    # Only quick versions: the full first run failed or was interrupted (a killed worker); queue it again.
    plan = (("full", params),) if state.versions else (("quick", {**params, "profile": "quick"}), ("full", params))
    if state.versions:
        say(f"only a quick model exists (active: {state.active or 'none'}): queueing the full first run again")
    queued = []
    for label, run_params in plan:
        status, body = http("POST", f"{base_url}/api/v1/training-runs", token, {"params": run_params})
        if status not in (200, 201, 202):
            say(f"could not queue the {label} first training run ({status}): {body}")
            return
        queued.append(body.get("id") if isinstance(body, dict) else body)
    if len(queued) == 1:
        say(f"queued the full run #{queued[0]} on {folder} (backbone weights: "
            f"{params.get('backbone_weights', 'imagenet')}); the gate promotes it over the quick model")
        return
    say(f"queued a quick first model, training run #{queued[0]} (profile 'quick': minutes on a CPU, its "
        f"version's manifest says so), then the full run #{queued[1]} on {folder} ({', '.join(classes)}; "
        f"backbone weights: {params.get('backbone_weights', 'imagenet')}), which replaces it when the gate "
        "finds it better. Jobs wait as queued until the quick one is active (README: first model).")


# A child that dies is started again (what the OOM killer or a stray kill does must not take the
# whole service down); one that dies this often within the window is broken: everything stops.
RESTART_LIMIT = 3
RESTART_WINDOW_S = 300.0


def first_run_params(env: dict[str, str]) -> dict[str, str]:
    """The first runs' recipe options: BACKBONE_WEIGHTS when set; else ImageNet when it can be had,
    random-init backbones ("none") on an offline machine, where ImageNet runs could only fail."""
    # The worker reads TRAINING_DATA_DIR from its environment; only recipe options travel here.
    if backbone := env.get("BACKBONE_WEIGHTS"):
        return {"backbone_weights": backbone}
    from models.backbones import imagenet_available  # noqa: PLC0415 - only when a first run is queued

    if imagenet_available():
        return {}
    say("ImageNet backbone weights are neither in the Keras cache nor downloadable (offline?): the first "
        "runs use random-init backbones (backbone_weights none; weaker, see README: Backbone weights). "
        "Set BACKBONE_WEIGHTS to choose.")
    return {"backbone_weights": "none"}


def supervise(sup: Supervisor, env: dict[str, str], stop: dict[str, bool]) -> int:
    """Watch children and progress until Ctrl-C/SIGTERM (0); restart a child that dies, or stop
    everything (1) when one keeps dying."""
    watcher = ServiceWatcher(env)
    restarts: dict[str, list[float]] = {}
    while not stop["requested"]:
        dead = sup.exited()
        if dead is not None:
            now = time.monotonic()
            recent = [t for t in restarts.get(dead.name, []) if now - t < RESTART_WINDOW_S] + [now]
            restarts[dead.name] = recent
            if len(recent) > RESTART_LIMIT:
                say(f"{dead.name} exited with {dead.process.returncode}, {len(recent)} times in "
                    f"{RESTART_WINDOW_S / 60:.0f} min; stopping everything. Last lines of "
                    f"{dead.log_path}:\n{tail(dead.log_path)}")
                return 1
            say(f"{dead.name} exited with {dead.process.returncode}; starting it again "
                f"({len(recent)} of {RESTART_LIMIT} restarts allowed in {RESTART_WINDOW_S / 60:.0f} min). "
                f"Its scans go back to the queue when their lease runs out (SCAN_LEASE_S); a training "
                f"run it was running ends failed after TRAINING_LEASE_S (queue it again on "
                f"/training-runs; make run queues a missing full first run when it starts). "
                f"Last lines of {dead.log_path}:\n{tail(dead.log_path, 8)}")
            sup.restart(dead)
        for line in watcher.poll():
            say(line)
        time.sleep(0.5)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the service until interrupted; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kombu").setLevel(logging.ERROR)  # "No hostname was supplied" for filesystem://
    stop = {"requested": False}

    def request_stop(signum: int, _frame: Any) -> None:
        if stop["requested"]:  # a second Ctrl-C: do not wait politely any more
            raise KeyboardInterrupt
        stop["requested"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    data_dir = ensure_data_dir(Path(args.data_dir))
    logs = ensure_data_dir(data_dir / "logs")
    key_file = ensure_secret_key(data_dir)
    env = child_env(data_dir)
    sup = Supervisor()
    status = 1
    try:
        say(f"data in {data_dir} (secret key {key_file}, logs in {logs})")
        choice = pick_broker(args, env)
        say(f"broker: {choice.kind} — {choice.reason}")
        start_broker(choice, sup, env, data_dir, logs)
        created = ensure_database(database_url(env))
        if created:
            say(created)
        run_checked([tool("flask"), "--app", "web", "db", "upgrade"], env, "flask --app web db upgrade")
        say("database schema is up to date")
        for line in resend_open_work(env, choice.kind):
            say(line)
        base_url = start_services(args, sup, env, data_dir, logs)
        wait_healthy(base_url, sup, args.startup_timeout, stop)
        token = admin_token(base_url, env, data_dir)
        if not args.no_train:
            maybe_queue_training(base_url, token, env)
        env_file = write_env_file(data_dir, env)
        if args.ready_file:
            args.ready_file.write_text(json.dumps({
                "url": base_url, "token": token, "broker": choice.kind,
                "pids": {c.name: c.pgid for c in sup.children}}))
        say(f"ready: {base_url}  (web, workers, beat running; Ctrl-C stops everything)")
        say(f"admin token: {token}")
        say(f"try: curl -H 'Authorization: Bearer {token}' {base_url}/api/v1/models")
        say(f"CLI in another shell (same broker and data): source {env_file}")
        status = 0 if stop["requested"] else supervise(sup, env, stop)
    except KeyboardInterrupt:
        status = 130
    except (RuntimeError, OSError) as exc:
        say(f"error: {exc}")
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish the shutdown even if Ctrl-C is pressed again
        if sup.children:
            say("stopping " + ", ".join(c.name for c in reversed(sup.children)) + " ...")
            killed = sup.stop_all(grace_s=args.stop_grace if status != 130 else 1.0)
            say("stopped" + (f" (killed after the grace period: {', '.join(killed)})" if killed else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
