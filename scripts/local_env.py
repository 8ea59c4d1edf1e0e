"""What `make run` needs before it starts anything: data folder, secret key, a broker.

The broker decision is a plain function so it can be tested against a real Redis,
a real closed port and a real PATH.
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SECRET_KEY_FILE = "secret_key"  # the name config.settings reads in development
REDIS_DIR = "redis"
BROKER_DIR = "broker"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")


@dataclass(frozen=True)
class BrokerChoice:
    """Which broker the local run uses, and why (printed to the user)."""

    kind: str  # "configured" | "redis" | "private-redis" | "filesystem"
    url: str  # the URL children get (empty for private-redis until it is started)
    reason: str


def ensure_data_dir(data_dir: Path) -> Path:
    """Create DATA_DIR (and its parents) if missing; return its absolute path."""
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def ensure_secret_key(data_dir: Path) -> Path:
    """Create DATA_DIR/secret_key once (0600, random); keep an existing one, tightening its mode."""
    path = Path(data_dir) / SECRET_KEY_FILE
    try:
        # O_EXCL: never overwrite a key that sessions and cookies already depend on.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if not path.read_text().strip():
            raise RuntimeError(f"{path} exists but is empty; delete it and run again") from None
        os.chmod(path, 0o600)
        return path
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    return path


def ping_redis(url: str, timeout_s: float = 1.0) -> bool:
    """True if a Redis server answers PING at ``url``."""
    import redis  # imported here: the runner must start even before requirements are complete

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()


def choose_broker(redis_url: str, broker_url: str = "", search_path: str | None = None,
                  timeout_s: float = 1.0) -> BrokerChoice:
    """Pick the broker: BROKER_URL if set, a Redis that answers, a private redis-server, else files."""
    if broker_url:
        return BrokerChoice("configured", broker_url, "BROKER_URL is set")
    if ping_redis(redis_url, timeout_s):
        return BrokerChoice("redis", redis_url, f"Redis answers at {redis_url}")
    server = shutil.which("redis-server", path=search_path)
    if server:
        return BrokerChoice("private-redis", "",
                            f"no Redis answers at {redis_url}; starting a private {server}")
    return BrokerChoice(
        "filesystem", "filesystem://",
        f"no Redis answers at {redis_url} and redis-server is not installed; using the embedded "
        "Celery filesystem transport (fine for one machine; install redis-server for real use)")


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it can be bound on 127.0.0.1, else a free port the OS picks."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free TCP port on 127.0.0.1")


def private_redis_command(data_dir: Path, server: str = "redis-server") -> tuple[list[str], str]:
    """The argv and URL of a private, memory-only redis-server for this DATA_DIR.

    The port is remembered in DATA_DIR/redis/port so the URL stays the same across runs.
    """
    folder = Path(data_dir) / REDIS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    port_file = folder / "port"
    remembered = int(port_file.read_text()) if port_file.is_file() else None
    port = free_port(remembered)
    port_file.write_text(f"{port}\n")
    argv = [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(folder), "--protected-mode", "yes"]
    return argv, f"redis://127.0.0.1:{port}/0"


def wait_for_redis(url: str, timeout_s: float = 15.0) -> bool:
    """Poll until Redis answers at ``url`` or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ping_redis(url, 0.5):
            return True
        time.sleep(0.2)
    return False


def labelled_classes(folder: Path | None, min_classes: int = 2) -> list[str]:
    """Class folder names if ``folder`` holds >= min_classes subfolders with images, else []."""
    if folder is None or not Path(folder).is_dir():
        return []
    classes = []
    for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(".")):
        # Look at a few entries only: the folder may hold thousands of scans.
        for count, entry in enumerate(os.scandir(sub)):
            if entry.name.lower().endswith(IMAGE_SUFFIXES):
                classes.append(sub.name)
                break
            if count > 200:
                break
    return classes if len(classes) >= min_classes else []


def run_checked(argv: list[str], env: dict[str, str], what: str, timeout_s: float = 300) -> str:
    """Run a short command to completion; return stdout, or raise with its output on failure."""
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def ensure_database(url: str) -> str | None:
    """Create the PostgreSQL database `url` names when the server says it does not exist.

    The local runner sets up everything a first run needs; a database that cannot be reached
    for another reason raises RuntimeError with one line saying what to check. Returns what
    was done (None when nothing was needed, or for a non-PostgreSQL URL).
    """
    from sqlalchemy import create_engine, text  # noqa: PLC0415 - only the runner needs it here
    from sqlalchemy.engine import make_url  # noqa: PLC0415
    from sqlalchemy.exc import OperationalError  # noqa: PLC0415

    target = make_url(url)
    if not target.drivername.startswith("postgresql") or not target.database:
        return None
    engine = create_engine(target, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            return None
    except OperationalError as exc:
        if "does not exist" not in str(exc.orig or exc):
            raise RuntimeError(f"cannot reach the database at {target.render_as_string(hide_password=True)}: "
                               f"{str(exc.orig or exc).strip().splitlines()[0]} (is PostgreSQL running? "
                               "check DATABASE_URL)") from None
    finally:
        engine.dispose()
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT",
                          connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            name = target.database.replace('"', '""')
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        raise RuntimeError(f"database {target.database!r} does not exist and could not be created "
                           f"({str(exc.orig or exc).strip().splitlines()[0]}); create it with "
                           f"createdb {target.database}") from None
    finally:
        admin.dispose()
    return f"created the PostgreSQL database {target.database!r}"
