"""backend usage: per-resource (e.g. Codex account) outcomes for statistics

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backend_usage",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("backend", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backend_usage")),
    )
    with op.batch_alter_table("backend_usage", schema=None) as batch_op:
        batch_op.create_index("ix_backend_usage_subject", ["backend", "subject", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("backend_usage", schema=None) as batch_op:
        batch_op.drop_index("ix_backend_usage_subject")
    op.drop_table("backend_usage")
