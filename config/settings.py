"""One settings object for web, workers and CLI, read from the environment.

Every setting is documented in the README's settings table; keep the two in
step. Tests pass overrides instead of mutating ``os.environ``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

SECRET_KEY_FILE = "secret_key"
PRECISIONS = ("auto", "float32", "bfloat16")
ENVIRONMENTS = ("development", "production", "test")


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Typed, immutable view of the service's environment."""

    env: str = "development"
    data_dir: Path = Path("var")
    database_url: str = ""
    redis_url: str = "redis://localhost:6379/0"
    broker_url: str = ""
    # Prefix on every Redis key Celery uses, so several services (or test runs) can share one Redis db.
    broker_key_prefix: str = ""
    secret_key: str = field(default="", repr=False)
    training_data_dir: Path | None = None
    backbone_weights: str = "imagenet"
    inference_batch_size: int = 32
    # Engine batches per classify task: within a task the next batch decodes and the last
    # one is stored while one computes, and the per-task overhead is paid once.
    inference_batches_per_task: int = 4
    inference_precision: str = "auto"
    max_upload_mb: int = 512
    # Status event streams (GET /api/v1/jobs/<id>/events) one web process holds at once: each
    # holds a server thread, so keep it under the web server's threads per process.
    job_events_max_streams: int = 40
    max_zip_files: int = 20000
    max_scan_attempts: int = 3
    # Images declaring more pixels than this (read from the header) are refused before decoding.
    max_image_pixels: int = 36_000_000
    # A worker holds a lease on the scans it works on, renewed while it runs; the sweeper
    # re-sends scans whose lease ran out (their worker died) and scans that never reached
    # the broker or were lost from it, once they have waited this long.
    scan_lease_s: int = 60
    # A running training run whose worker stopped renewing this lease is marked failed.
    training_lease_s: int = 300
    retrain_schedule: str = "0 3 * * 0"
    # A trained candidate is promoted only if its ensemble accuracy and macro-F1 on the fixed
    # evaluation split are each at most this much below the active version's, on the same scans.
    promotion_tolerance: float = 0.005
    # Backbone features kept across training runs (None: DATA_DIR/feature-cache); its bound in MB
    # (least recently used entries go first; 0 turns the cache off).
    feature_cache_dir: Path | None = None
    feature_cache_max_mb: int = 4096
    # Scheduled retraining continues the active version's custom CNN instead of training it anew.
    retrain_warm_start: bool = False
    # Training runs pick the review threshold at which accepted validation scans reach this accuracy.
    review_target_accuracy: float = 0.995
    task_visibility_timeout_s: int = 6 * 3600
    session_cookie_secure: bool = False
    login_rate_limit: str = "10 per minute"
    dicom_deidentify: bool = True
    log_level: str = "INFO"

    @property
    def uploads_dir(self) -> Path:
        """Where uploaded files are stored once, by content hash."""
        return self.data_dir / "blobs"

    @property
    def bundles_dir(self) -> Path:
        """Where trained model bundles are written."""
        return self.data_dir / "bundles"

    @property
    def reports_dir(self) -> Path:
        """Where evaluation reports and plots of training runs are written."""
        return self.data_dir / "reports"

    @property
    def feature_cache_folder(self) -> Path:
        """Where training runs keep backbone features: FEATURE_CACHE_DIR, else DATA_DIR/feature-cache."""
        return self.feature_cache_dir or self.data_dir / "feature-cache"

    @property
    def max_upload_bytes(self) -> int:
        """MAX_UPLOAD_MB in bytes."""
        return self.max_upload_mb * 1024 * 1024

    @property
    def celery_broker_url(self) -> str:
        """The broker Celery uses: BROKER_URL if set, else REDIS_URL."""
        return self.broker_url or self.redis_url

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _int(environ: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(environ: Mapping[str, str], name: str, default: float, minimum: float, maximum: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum:  # also refuses nan
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {raw!r}")
    return value


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false (1/0, yes/no, on/off), got {raw!r}")


def _secret_key(environ: Mapping[str, str], env: str, data_dir: Path) -> str:
    key = environ.get("SECRET_KEY", "")
    if key:
        return key
    # `make run` writes a random key here once, so local sessions survive restarts.
    key_file = data_dir / SECRET_KEY_FILE
    if env != "production" and key_file.is_file():
        return key_file.read_text().strip()
    if env == "test":
        return "test-only-secret-key"
    raise SettingsError(
        "SECRET_KEY is not set. Set it to a long random string "
        "(python -c 'import secrets; print(secrets.token_urlsafe(48))'), "
        f"or run `make run`, which keeps one in {key_file} for local use."
    )


def load_settings(environ: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build Settings from the environment, then apply overrides (field names)."""
    environ = os.environ if environ is None else environ
    env = environ.get("APP_ENV", "development")
    if env not in ENVIRONMENTS:
        raise SettingsError(f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
    overrides = dict(overrides or {})
    env = overrides.get("env", env)
    data_dir = Path(overrides.get("data_dir") or environ.get("DATA_DIR") or "var").absolute()
    precision = environ.get("INFERENCE_PRECISION", "auto")
    if precision not in PRECISIONS:
        raise SettingsError(f"INFERENCE_PRECISION must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    training_dir = environ.get("TRAINING_DATA_DIR")
    values: dict[str, Any] = dict(
        env=env,
        data_dir=data_dir,
        database_url=environ.get("DATABASE_URL") or f"sqlite:///{data_dir / 'service.db'}",
        redis_url=environ.get("REDIS_URL") or "redis://localhost:6379/0",
        broker_url=environ.get("BROKER_URL", ""),
        broker_key_prefix=environ.get("BROKER_KEY_PREFIX", ""),
        secret_key="" if "secret_key" in overrides else _secret_key(environ, env, data_dir),
        training_data_dir=Path(training_dir).absolute() if training_dir else None,
        # Scheduled and queued retraining use this unless a run's params say otherwise.
        backbone_weights=environ.get("BACKBONE_WEIGHTS") or "imagenet",
        inference_batch_size=_int(environ, "INFERENCE_BATCH_SIZE", 32),
        inference_batches_per_task=_int(environ, "INFERENCE_BATCHES_PER_TASK", 4),
        inference_precision=precision,
        max_upload_mb=_int(environ, "MAX_UPLOAD_MB", 512),
        job_events_max_streams=_int(environ, "JOB_EVENTS_MAX_STREAMS", 40, minimum=0),
        max_zip_files=_int(environ, "MAX_ZIP_FILES", 20000),
        # SCAN_MAX_ATTEMPTS is accepted as another spelling of the same setting.
        max_scan_attempts=_int(environ, "MAX_SCAN_ATTEMPTS" if environ.get("MAX_SCAN_ATTEMPTS")
                               else "SCAN_MAX_ATTEMPTS", 3),
        max_image_pixels=_int(environ, "MAX_IMAGE_PIXELS", 36_000_000, minimum=64 * 64),
        scan_lease_s=_int(environ, "SCAN_LEASE_S", 60, minimum=5),
        training_lease_s=_int(environ, "TRAINING_LEASE_S", 300, minimum=10),
        retrain_schedule=environ.get("RETRAIN_SCHEDULE", "0 3 * * 0"),
        promotion_tolerance=_float(environ, "PROMOTION_TOLERANCE", 0.005, 0.0, 1.0),
        feature_cache_dir=Path(environ["FEATURE_CACHE_DIR"]).absolute() if environ.get("FEATURE_CACHE_DIR") else None,
        feature_cache_max_mb=_int(environ, "FEATURE_CACHE_MAX_MB", 4096, minimum=0),
        retrain_warm_start=_bool(environ, "RETRAIN_WARM_START", False),
        review_target_accuracy=_float(environ, "REVIEW_TARGET_ACCURACY", 0.995, 0.5, 1.0),
        task_visibility_timeout_s=_int(environ, "TASK_VISIBILITY_TIMEOUT_S", 6 * 3600, minimum=60),
        session_cookie_secure=_bool(environ, "SESSION_COOKIE_SECURE", False),
        login_rate_limit=environ.get("LOGIN_RATE_LIMIT") or "10 per minute",
        dicom_deidentify=_bool(environ, "DICOM_DEIDENTIFY", True),
        log_level=environ.get("LOG_LEVEL", "INFO").upper(),
    )
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise SettingsError(f"unknown settings override(s): {', '.join(sorted(unknown))}")
    values.update(overrides)
    if "data_dir" in overrides:
        values["data_dir"] = Path(overrides["data_dir"]).absolute()
    return Settings(**values)
