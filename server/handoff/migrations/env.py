"""Alembic environment: runs on the connection that ``handoff.store.open_store`` passes in (no alembic.ini).

To write a new migration, edit ``handoff.store.metadata`` and add a file under versions/ with the matching
``op`` calls; ``tests/server/test_store.py`` fails while the two disagree.
"""

from alembic import context

from handoff.store import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through handoff.store.open_store, which provides the connection")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
