"""Runs started by ReplayRun, each linked to the run it replays.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_replays",
        sa.Column("run_id", sa.String(), primary_key=True),
        sa.Column("original_run_id", sa.String(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_run_replays_original_run_id", "run_replays", ["original_run_id"])


def downgrade() -> None:
    op.drop_index("ix_run_replays_original_run_id", table_name="run_replays")
    op.drop_table("run_replays")
