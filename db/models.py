"""Typed SQLAlchemy 2.0 tables: jobs, scans, predictions, reviews, model versions, training runs, users."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (Boolean, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, text)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, JSONType, UTCDateTime, utcnow

ROLES = ("viewer", "uploader", "reviewer", "admin")
JOB_STATUSES = ("queued", "running", "done")
SCAN_STATUSES = ("queued", "classified", "failed")
MODEL_STATUSES = ("candidate", "active", "retired")
RUN_STATUSES = ("queued", "running", "succeeded", "failed")


class User(Base):
    """A person or a service account; the role decides what it may do."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="viewer")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tokens: Mapped[list["ApiToken"]] = relationship(back_populates="user")


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # None: the token never expires.
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    user: Mapped[User] = relationship(back_populates="tokens")


class Job(Base):
    """One upload of scans (a study folder, many files or a zip), possibly in several requests."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    source: Mapped[str] = mapped_column(String(32), default="upload")
    name: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    # Why a job is waiting (e.g. no active model version); empty when nothing blocks it.
    status_detail: Mapped[str] = mapped_column(Text, default="")
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Counters are recomputed from scan rows in the transaction that changes them,
    # so retries and duplicates can never make them drift.
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    reused: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scans: Mapped[list["Scan"]] = relationship(back_populates="job", order_by="Scan.id")


class Scan(Base):
    """One image to classify: a file, or one frame of a multi-frame DICOM file."""

    __tablename__ = "scans"
    __table_args__ = (
        UniqueConstraint("job_id", "path", "frame"),
        Index("ix_scans_job_status", "job_id", "status"),
        Index("ix_scans_sha256_frame", "sha256", "frame"),
        # The sweeper looks for queued scans only; they are few next to the classified ones.
        Index("ix_scans_status_dispatched", "status", "dispatched_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    # The file's SHA-256 as the client sent it, when that differs from the stored content
    # (a de-identified DICOM file); None: stored as sent. Resuming clients compare it.
    sent_sha256: Mapped[str | None] = mapped_column(String(64))
    frame: Mapped[int] = mapped_column(Integer, default=0)
    path: Mapped[str] = mapped_column(String(1024))
    study: Mapped[str] = mapped_column(String(255), default="", index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When a classify task for this scan was last handed to the broker (None: never sent).
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The worker task working on this scan and until when; renewed while it runs. A lease
    # that ran out while the scan is still queued means its worker died.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reused: Mapped[bool] = mapped_column(Boolean, default=False)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    classified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    job: Mapped[Job] = relationship(back_populates="scans")
    predictions: Mapped[list["Prediction"]] = relationship(back_populates="scan")


class Prediction(Base):
    """One model's answer for one scan under one model version (``ensemble`` included)."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("scan_id", "model_version_id", "model_name"),
        Index("ix_predictions_model_label", "model_name", "label"),
        # The review queue: the few ensemble rows the triage rule flagged (migration 0007).
        Index("ix_predictions_review_queue", "scan_id", "model_version_id",
              postgresql_where=text("model_name = 'ensemble' AND needs_review IS true"),
              sqlite_where=text("model_name = 'ensemble' AND needs_review IS true")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    model_name: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column(Float, index=True)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSONType)
    agreement: Mapped[int | None] = mapped_column(Integer)
    # Ensemble rows: the version's review rule sent this scan to review (None: not decided).
    needs_review: Mapped[bool | None] = mapped_column(Boolean)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    scan: Mapped[Scan] = relationship(back_populates="predictions")


class ModelVersion(Base):
    """A verified model bundle on disk and what is known about it."""

    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    bundle_path: Mapped[str] = mapped_column(String(1024))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONType)
    backbone_weights: Mapped[str] = mapped_column(String(32))
    backbone_sha256: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="candidate", index=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Who made it active last (None: a training run's gate, or register-model --activate).
    activated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Its latest figures on the fixed evaluation split (tasks.gate): scored as served.
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    activated_by_user: Mapped[User | None] = relationship(foreign_keys=[activated_by])


class TrainingRun(Base):
    """A queued retraining: trigger, progress, log and the version it produced."""

    __tablename__ = "training_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16), default="manual")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stage: Mapped[str] = mapped_column(String(64), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the run was last handed to the broker, and until when its worker's lease holds.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the run trained on: folder files, reviewed scans, overrides, evaluation split size.
    data_summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The promotion gate's verdict: promoted, reason, both versions' figures, evaluation size.
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Review(Base):
    """A reviewer's label for a scan; the latest one not withdrawn is the scan's current review."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    label: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when withdrawn; the previous review (if any) is current again.
    withdrawn: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    user: Mapped[User | None] = relationship(foreign_keys=[user_id])
    withdrawn_by_user: Mapped[User | None] = relationship(foreign_keys=[withdrawn_by])


class AuditEvent(Base):
    """Who did what, when: uploads, reviews, activations, token creation, retraining."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
