"""input roles: a job's inputs are references or the edit mask

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_input", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=False, server_default="reference"))


def downgrade() -> None:
    with op.batch_alter_table("job_input", schema=None) as batch_op:
        batch_op.drop_column("role")
