"""job.operation, job.result and job.error_retry_after: what params held beside the caller's parameters

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

job = sa.table(
    "job",
    sa.column("id", sa.String),
    sa.column("kind", sa.String),
    sa.column("operation", sa.String),
    sa.column("params", sa.JSON),
    sa.column("result", sa.JSON(none_as_null=True)),
    sa.column("error_retry_after", sa.String),
)
job_input = sa.table("job_input", sa.column("job_id", sa.String), sa.column("role", sa.String))
MOVED = ("operation", "result", "retry_after")


def _params(value: Any) -> dict[str, Any]:
    parsed = json.loads(value) if isinstance(value, str) else value
    return dict(parsed) if isinstance(parsed, dict) else {}


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("operation", sa.String(length=16), nullable=False, server_default="generate"))
        batch_op.add_column(sa.Column("result", sa.JSON(none_as_null=True), nullable=True))
        batch_op.add_column(sa.Column("error_retry_after", sa.String(length=64), nullable=True))
    connection = op.get_bind()
    # A job with reference images and no recorded operation was an edit (what the backends assumed).
    with_references = sa.select(job_input.c.job_id).where(job_input.c.role == "reference")
    connection.execute(
        job.update().where(job.c.kind == "image", job.c.id.in_(with_references)).values(operation="edit")
    )
    connection.execute(job.update().where(job.c.kind == "vision").values(operation="vision"))
    for row in connection.execute(sa.select(job.c.id, job.c.params)).all():
        params = _params(row.params)
        if not any(name in params for name in MOVED):
            continue
        values: dict[str, Any] = {"params": {k: v for k, v in params.items() if k not in MOVED}}
        if params.get("operation"):
            values["operation"] = str(params["operation"])[:16]
        if params.get("result") is not None:
            values["result"] = params["result"]
        if params.get("retry_after"):
            values["error_retry_after"] = str(params["retry_after"])[:64]
        connection.execute(job.update().where(job.c.id == row.id).values(**values))


def downgrade() -> None:
    connection = op.get_bind()
    rows = sa.select(job.c.id, job.c.operation, job.c.params, job.c.result, job.c.error_retry_after)
    for row in connection.execute(rows).all():
        params = {**_params(row.params), "operation": row.operation}
        if row.result is not None:
            params["result"] = row.result
        if row.error_retry_after:
            params["retry_after"] = row.error_retry_after
        connection.execute(job.update().where(job.c.id == row.id).values(params=params))
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("error_retry_after")
        batch_op.drop_column("result")
        batch_op.drop_column("operation")
