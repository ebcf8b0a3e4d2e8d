"""Initial schema: apps, functions, events, runs, step attempts.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("language", sa.String(), nullable=False),
        sa.Column("sdk_name", sa.String(), nullable=False),
        sa.Column("sdk_version", sa.String(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "functions",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("slug", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_functions_app_id", "functions", ["app_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("data_json", sa.Text(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_events_name_id", "events", ["name", "id"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("function_id", sa.String(), nullable=False, server_default=""),
        sa.Column("app_id", sa.String(), nullable=False, server_default=""),
        sa.Column("event_id", sa.String(), nullable=False, server_default=""),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("started_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("ended_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("output_json", sa.Text(), nullable=True),
        sa.Column("error_json", sa.Text(), nullable=True),
    )
    op.create_index("ix_runs_event_id", "runs", ["event_id"])
    op.create_index("ix_runs_function_id_id", "runs", ["function_id", "id"])
    op.create_index("ix_runs_status_id", "runs", ["status", "id"])
    op.create_table(
        "step_attempts",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("step_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("output_json", sa.Text(), nullable=True),
        sa.Column("error_json", sa.Text(), nullable=True),
        sa.Column("ended_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_step_attempts_run_id", "step_attempts", ["run_id"])


def downgrade() -> None:
    op.drop_table("step_attempts")
    op.drop_table("runs")
    op.drop_table("events")
    op.drop_table("functions")
    op.drop_table("apps")
