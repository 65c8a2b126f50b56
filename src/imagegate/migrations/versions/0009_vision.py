"""vision: job.kind tells image jobs from vision requests; every existing key gets the vision scope

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ALL_SCOPES = '["generate", "edit", "read", "delete", "vision"]'
OLD_SCOPES = '["generate", "edit", "read", "delete"]'

api_key = sa.table("api_key", sa.column("id", sa.Integer), sa.column("scopes", sa.JSON))


def _scopes(value: Any) -> list[str]:
    return list(json.loads(value) if isinstance(value, str) else value or [])


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="image"))
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.alter_column("scopes", existing_type=sa.JSON(), server_default=ALL_SCOPES)
    # codex-image-service keys could always use vision; keys that existed before it keep up with them.
    connection = op.get_bind()
    for row in connection.execute(sa.select(api_key.c.id, api_key.c.scopes)).all():
        scopes = _scopes(row.scopes)
        if "vision" not in scopes:
            connection.execute(api_key.update().where(api_key.c.id == row.id).values(scopes=[*scopes, "vision"]))


def downgrade() -> None:
    connection = op.get_bind()
    for row in connection.execute(sa.select(api_key.c.id, api_key.c.scopes)).all():
        scopes = _scopes(row.scopes)
        if "vision" in scopes:
            connection.execute(
                api_key.update().where(api_key.c.id == row.id).values(scopes=[s for s in scopes if s != "vision"])
            )
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.alter_column("scopes", existing_type=sa.JSON(), server_default=OLD_SCOPES)
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("kind")
