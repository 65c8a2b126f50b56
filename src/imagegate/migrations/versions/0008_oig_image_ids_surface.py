"""openai-image-gen surface: a public id and a deleted mark per output image, and the job's surface

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("surface", sa.String(length=16), server_default="native", nullable=False))
    with op.batch_alter_table("job_image", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    # Images made before this revision get their ids now: each one its own, so no default can do it.
    connection = op.get_bind()
    image = sa.table("job_image", sa.column("id", sa.Integer()), sa.column("public_id", sa.String()))
    for (image_id,) in connection.execute(sa.select(image.c.id)).all():
        connection.execute(image.update().where(image.c.id == image_id).values(public_id=str(uuid.uuid4())))
    with op.batch_alter_table("job_image", schema=None) as batch_op:
        batch_op.alter_column("public_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.create_unique_constraint(op.f("uq_job_image_public_id"), ["public_id"])


def downgrade() -> None:
    with op.batch_alter_table("job_image", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_job_image_public_id"), type_="unique")
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("public_id")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("surface")
