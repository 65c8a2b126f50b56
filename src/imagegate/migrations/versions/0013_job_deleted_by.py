"""job deleted by: who deleted a job (its caller, or the operator in the admin UI or the CLI)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Jobs deleted before this column existed keep NULL: who deleted them was not recorded.
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_by", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("deleted_by")
