"""The job, job_input, job_image and worker tables: the queue is the job table."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from imagegate.db import Base, UTCDateTime, utcnow


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)


# Who deleted a job: its caller (through any API surface), or the operator in the admin UI or `imagegate jobs`.
DeletedBy = Literal["caller", "admin", "cli"]


class JobKind(enum.StrEnum):
    """What a job row records: an image job (queued, claimed) or a vision request (run at once, never queued)."""

    IMAGE = "image"
    VISION = "vision"


class Job(Base):
    """One generation request, any number of output images."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_claim", "status", "backend", "fair_tag", "seq"),
        Index("ix_job_key_history", "key_id", "created_at"),
        Index("ix_job_key_status", "key_id", "status", "fair_tag"),
        Index("ix_job_expiry", "status", "expires_at"),
        Index("ix_job_created", "created_at"),
        Index("ix_job_status_created", "status", "created_at"),
        Index("ix_job_model_created", "model", "created_at"),
    )

    # seq orders the queue (FIFO within a fairness tag); id is the public, random name.
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_key.id", ondelete="SET NULL"))
    key_handle: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.IMAGE, server_default=JobKind.IMAGE.value)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    model: Mapped[str] = mapped_column(String(100))
    backend: Mapped[str] = mapped_column(String(100))
    prompt: Mapped[str] = mapped_column(Text)
    size: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    quality: Mapped[str] = mapped_column(String(16))
    output_format: Mapped[str] = mapped_column(String(8))
    count: Mapped[int] = mapped_column(Integer)
    # generate, edit or variation (backends.base.Operation); "vision" for a vision request.
    operation: Mapped[str] = mapped_column(String(16), default="generate", server_default="generate")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the caller's, as the backend gets them
    # What the backend reported beside the images (revised prompt, usage, …), or a vision request's answer.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    # Estimated dollars, priced at the finish from the usage in result and IMAGEGATE_PRICES; None when unknown.
    cost_usd: Mapped[float | None] = mapped_column(Float, default=None)
    fair_tag: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(40), default=None)
    # While running: the worker holds the job until then (by the database's clock) and renews it as it goes.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Who asked to stop it while it ran: "caller" or "operator" (the admin UI or the CLI); the error says so.
    cancel_requested_by: Mapped[str | None] = mapped_column(String(16), default=None)
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    error_status: Mapped[int | None] = mapped_column(Integer, default=None)
    error_retry_after: Mapped[str | None] = mapped_column(String(64), default=None)  # the Retry-After it answers with
    logs: Mapped[str] = mapped_column(Text, default="")
    request_id: Mapped[str | None] = mapped_column(String(128), default=None)
    # Which API surface the job came in through: native, openai or oig (openai-image-gen).
    surface: Mapped[str] = mapped_column(String(16), default="native", server_default="native")
    # The caller's webhook: {"url", "events", "base"} (webhooks.targets.WebhookTarget), or None.
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Deleted: files gone, hidden from the API, kept for history and quotas.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Who deleted it (DeletedBy): its caller through an API, or the operator in the admin UI or the CLI.
    deleted_by: Mapped[str | None] = mapped_column(String(16), default=None)

    images: Mapped[list[JobImage]] = relationship(
        back_populates="job", order_by="JobImage.index", cascade="all, delete-orphan", lazy="raise"
    )
    inputs: Mapped[list[JobInput]] = relationship(
        back_populates="job", order_by="JobInput.index", cascade="all, delete-orphan", lazy="raise"
    )

    @property
    def is_finished(self) -> bool:
        """True once the job can no longer change (other than expiring)."""
        return self.status in FINISHED

    @property
    def live_images(self) -> list[JobImage]:
        """The output images a caller has not deleted one by one."""
        return [image for image in self.images if image.deleted_at is None]


def new_image_id() -> str:
    """A stable public id for one output image (a UUID, the shape openai-image-gen clients know)."""
    return str(uuid.uuid4())


class JobImage(Base):
    """One output image of a job, stored under an unguessable name."""

    __tablename__ = "job_image"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    storage_key: Mapped[str] = mapped_column(String(200))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))
    bytes: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    public_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_image_id)
    # Deleted on its own (DELETE /images/<id>): its file is gone, the row stays for the job's history.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    job: Mapped[Job] = relationship(back_populates="images")


class JobInput(Base):
    """One input image of a job (a reference, or the edit mask): its bytes are in storage, only the key is here."""

    __tablename__ = "job_input"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16), default="reference")
    storage_key: Mapped[str] = mapped_column(String(200))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))
    bytes: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    sha256: Mapped[str] = mapped_column(String(64))

    job: Mapped[Job] = relationship(back_populates="inputs")


class Worker(Base):
    """A process that runs jobs; its heartbeat says it is alive (it renews its jobs' leases with it)."""

    __tablename__ = "worker"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyRecord(Base):
    """An Idempotency-Key a caller used: which request it named and which job it made."""

    __tablename__ = "idempotency_record"
    __table_args__ = (
        UniqueConstraint("key_id", "idempotency_key"),
        Index("ix_idempotency_record_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_key.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
