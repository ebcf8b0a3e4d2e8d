"""Alembic environment: runs migrations on the connection `server.history.db.migrate` passes in.

There is no alembic.ini and no URL here; the server owns its engine.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from server.errors import FailedPrecondition
from server.history.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise FailedPrecondition("history migrations run only through server.history.db.migrate()")
_run(_connection)
