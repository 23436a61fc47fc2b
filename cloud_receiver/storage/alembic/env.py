"""Alembic's entry point for the receiver's migrations; run through cloud_receiver.storage.migrate.

The caller hands over an open SQLAlchemy connection in `config.attributes["connection"]`; each
migration runs in its transaction on both engines (SQLite and PostgreSQL both have transactional DDL).
"""

from __future__ import annotations

from alembic import context

from cloud_receiver.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
