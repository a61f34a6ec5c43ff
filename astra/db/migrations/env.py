"""Alembic environment: online migrations only, serialized by an advisory lock so that two
processes starting at once (stack up, a test worker) do not race on the version table."""

from alembic import context
from sqlalchemy import create_engine, pool, text

from astra.db.schema import metadata

MIGRATION_LOCK = 0x41535452  # "ASTR"


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        try:
            context.configure(connection=connection, target_metadata=metadata)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            connection.commit()
    engine.dispose()


run_migrations_online()
