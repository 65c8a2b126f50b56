"""job cancel requested by: who asked to stop a running job (its caller, or the operator)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Running jobs asked to stop before this column existed keep NULL and end as cancelled by the caller, as before.
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_requested_by", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested_by")
