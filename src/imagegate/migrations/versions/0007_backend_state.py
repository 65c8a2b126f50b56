"""backend_state and backend_event: what backends keep across restarts and processes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backend_state",
        sa.Column("backend", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("backend", "key", name=op.f("pk_backend_state")),
    )
    op.create_table(
        "backend_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("backend", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backend_event")),
    )
    op.create_index("ix_backend_event_key", "backend_event", ["backend", "kind", "key"])
    op.create_index("ix_backend_event_at", "backend_event", ["backend", "kind", "at"])


def downgrade() -> None:
    op.drop_index("ix_backend_event_at", table_name="backend_event")
    op.drop_index("ix_backend_event_key", table_name="backend_event")
    op.drop_table("backend_event")
    op.drop_table("backend_state")
