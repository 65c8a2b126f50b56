"""The backends' tables: named state and an event log (any backend's BackendStore), and usage statistics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from imagegate.db import Base, UTCDateTime, utcnow


class BackendState(Base):
    """One named value a backend keeps across restarts and shares with every process (a setting, a rest)."""

    __tablename__ = "backend_state"

    backend: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BackendEvent(Base):
    """One thing a backend wants remembered (a token rotation, an output's hash), found by kind and key."""

    __tablename__ = "backend_event"
    __table_args__ = (
        Index("ix_backend_event_key", "backend", "kind", "key"),
        Index("ix_backend_event_at", "backend", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backend: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(50))
    subject: Mapped[str] = mapped_column(String(100), default="")
    key: Mapped[str | None] = mapped_column(String(200), default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BackendUsage(Base):
    """One use of a backend's upstream resource (e.g. a Codex account): the source of per-account statistics."""

    __tablename__ = "backend_usage"
    __table_args__ = (Index("ix_backend_usage_subject", "backend", "subject", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backend: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(32))
    images: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
