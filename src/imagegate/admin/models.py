"""The admin_credential table: the admin password's argon2 hash, never the password."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from imagegate.db import Base, UTCDateTime, utcnow


class AdminCredential(Base):
    """The single admin login; one row."""

    __tablename__ = "admin_credential"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
