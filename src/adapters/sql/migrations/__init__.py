"""Alembic migrations for the wallet schema. Run them with `adapters.sql.migrate.upgrade(engine)`."""
