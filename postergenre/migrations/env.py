"""Alembic environment, driven programmatically (no alembic.ini).

The caller opens the connection and transaction and passes it as ``config.attributes["connection"]``:
:func:`postergenre.db.upgrade` for migrating, or, to write the next revision against a migrated database::

    with make_engine(url).begin() as conn:
        alembic.command.revision(alembic_config(conn), message="add runs", autogenerate=True)
"""

from alembic import context

from postergenre.db import Base


def main() -> None:
    connection = context.config.attributes.get("connection")
    if context.is_offline_mode() or connection is None:
        raise RuntimeError("run migrations through postergenre.db.upgrade (an open connection is required)")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: later migrations get copy-and-move batch operations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


main()
