"""job cost: each finished job's estimated dollars, priced once, so a budget check sums one column

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

from imagegate.jobs.spend import cost
from imagegate.settings import default_prices

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BATCH = 500
JOB = sa.table(
    "job",
    sa.column("id", sa.String),
    sa.column("model", sa.String),
    sa.column("result", sa.JSON),
    sa.column("finished_at", sa.DateTime),
    sa.column("cost_usd", sa.Float),
)


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
    _price_finished_jobs(context.config.attributes.get("prices") or default_prices())


def _price_finished_jobs(prices: dict[str, Any]) -> None:
    """Price the finished jobs whose backend reported usage, with the server's price table (the defaults when the
    migration runs without one); the rest stay unknown (NULL), as before."""
    bind = op.get_bind()
    after = ""
    while True:
        rows = bind.execute(
            sa.select(JOB.c.id, JOB.c.model, JOB.c.result)
            .where(JOB.c.id > after, JOB.c.finished_at.is_not(None), JOB.c.result.is_not(None))
            .order_by(JOB.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        priced = [
            {"job_id": row.id, "dollars": dollars}
            for row in rows
            if (dollars := cost(row.model, row.result, prices)) is not None
        ]
        if priced:
            bind.execute(
                sa.update(JOB).where(JOB.c.id == sa.bindparam("job_id")).values(cost_usd=sa.bindparam("dollars")),
                priced,
            )


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("cost_usd")
