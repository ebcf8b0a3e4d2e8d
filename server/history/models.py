"""SQL models of history: apps, functions, events, runs and step attempts.

One schema for SQLite and PostgreSQL: JSON is stored as Text, times as BigInteger Unix ms.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class AppRow(Base):
    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    language: Mapped[str] = mapped_column(String, default="")
    sdk_name: Mapped[str] = mapped_column(String, default="")
    sdk_version: Mapped[str] = mapped_column(String, default="")
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class FunctionRow(Base):
    __tablename__ = "functions"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # "{app_id}-{slug}"
    app_id: Mapped[str] = mapped_column(String, index=True)
    slug: Mapped[str] = mapped_column(String)
    name: Mapped[str] = mapped_column(String)
    config_json: Mapped[str] = mapped_column(Text)  # the whole FunctionConfig
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class EventRow(Base):
    __tablename__ = "events"
    # (name, id) serves both name lookups and "newest events of a name" pages.
    __table_args__ = (Index("ix_events_name_id", "name", "id"),)

    id: Mapped[str] = mapped_column(String, primary_key=True)  # ULID
    name: Mapped[str] = mapped_column(String)
    data_json: Mapped[str] = mapped_column(Text)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String, default="")
    received_at_ms: Mapped[int] = mapped_column(BigInteger)
    # W3C traceparent the event was sent with: the runs it starts link their traces to it.
    traceparent: Mapped[str] = mapped_column(String, default="", server_default="")


class RunRow(Base):
    __tablename__ = "runs"
    # Pages of runs are newest first, i.e. by id (a ULID) descending, optionally filtered.
    __table_args__ = (
        Index("ix_runs_function_id_id", "function_id", "id"),
        Index("ix_runs_status_id", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True)  # ULID
    # The writer may see a run's start or end before its creation (several consumers share
    # a stream), so these have defaults until RunCreated fills them in.
    function_id: Mapped[str] = mapped_column(String, default="", server_default="")
    app_id: Mapped[str] = mapped_column(String, default="", server_default="")
    event_id: Mapped[str] = mapped_column(String, default="", server_default="", index=True)
    status: Mapped[str] = mapped_column(String)
    created_at_ms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    started_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ended_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    output_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The job that ran a completed function to its end has no step attempt: its span's lease
    # and times are kept here (the final_* columns stay empty for other ends).
    final_lease_id: Mapped[str] = mapped_column(String, default="", server_default="")
    final_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    final_ready_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    final_started_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class StepAttemptRow(Base):
    __tablename__ = "step_attempts"

    # "{shard}-{stream entry id}": re-reading a stream entry inserts nothing new.
    id: Mapped[str] = mapped_column(String, primary_key=True)
    run_id: Mapped[str] = mapped_column(String, index=True)
    step_id: Mapped[str] = mapped_column(String)
    name: Mapped[str] = mapped_column(String)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String)
    output_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    ended_at_ms: Mapped[int] = mapped_column(BigInteger)
    # The attempt's spans (server/history/spans.py derives them): the lease it ran under, when
    # its job became runnable (None: relocked, it never waited), when it was leased, and
    # a sleep's wake-up time.
    lease_id: Mapped[str] = mapped_column(String, default="", server_default="")
    ready_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    started_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    until_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ReplayRow(Base):
    """A run started by ReplayRun, linked to the run it replays."""

    __tablename__ = "run_replays"
    run_id: Mapped[str] = mapped_column(String, primary_key=True)  # the new run
    original_run_id: Mapped[str] = mapped_column(String, index=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


def table(model: type[Base]) -> Table:
    """The Core table of a model, for executemany-friendly Core statements."""
    t = model.__table__
    assert isinstance(t, Table)
    return t


APPS = table(AppRow)
FUNCTIONS = table(FunctionRow)
EVENTS = table(EventRow)
RUNS = table(RunRow)
STEP_ATTEMPTS = table(StepAttemptRow)
REPLAYS = table(ReplayRow)
