"""Alembic migrations of the server's schema, run at start-up by ``handoff.store.open_store``."""
