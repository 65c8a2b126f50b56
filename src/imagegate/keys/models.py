"""The api_key, rate_event and audit_event tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from imagegate.db import Base, UTCDateTime, utcnow

SCOPES = ("generate", "edit", "read", "delete", "vision")


class ApiKey(Base):
    """A caller's API key and its limits; the raw token is shown once and only its SHA-256 is kept."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    handle: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # After a rotation the previous secret keeps working until previous_token_expires_at.
    previous_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    previous_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Signs this key's webhooks (Standard Webhooks 'whsec_…'); kept readable, since signing needs it.
    webhook_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    # Limits; None means unlimited (allowed_models None: every routed model).
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=lambda: list(SCOPES))
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    daily_image_quota: Mapped[int | None] = mapped_column(Integer, default=None)
    monthly_image_quota: Mapped[int | None] = mapped_column(Integer, default=None)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    # Dollars of estimated spend (jobs.spend) a month; the estimate comes from the backends' reported usage.
    monthly_budget_usd: Mapped[float | None] = mapped_column(Float, default=None)


class RateEvent(Base):
    """One authenticated request of a rate-limited key: the sliding window counts these."""

    __tablename__ = "rate_event"
    __table_args__ = (Index("ix_rate_event_window", "key_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_key.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """A change to a key or a refusal for limits: who, what, when. Never a raw key."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_at", "at"), Index("ix_audit_event_handle", "key_handle", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(40))
    key_handle: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
