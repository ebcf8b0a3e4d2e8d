"""What a run's spans are derived from: each attempt's lease and times, the final attempt of
a completed run, and the traceparent an event was sent with.

Spans are not rows of their own: their ids derive from run and lease, so history keeps the
few values they need on the rows it writes anyway (server/history/spans.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("step_attempts") as batch:
        batch.add_column(sa.Column("lease_id", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("ready_at_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("started_at_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("until_ms", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column("final_lease_id", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("final_attempt", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("final_ready_at_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("final_started_at_ms", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("events") as batch:
        batch.add_column(
            sa.Column("traceparent", sa.String(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("traceparent")
    with op.batch_alter_table("runs") as batch:
        for name in ("final_started_at_ms", "final_ready_at_ms", "final_attempt",
                     "final_lease_id"):
            batch.drop_column(name)
    with op.batch_alter_table("step_attempts") as batch:
        for name in ("until_ms", "started_at_ms", "ready_at_ms", "lease_id"):
            batch.drop_column(name)
