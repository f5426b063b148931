"""The SQL adapter: the ledger in SQLite or PostgreSQL, through SQLAlchemy Core.

- `engine.create_wallet_engine(url)` makes a correctly configured engine,
- `migrate.upgrade(engine)` brings the schema to the newest revision (Alembic),
- `unit_of_work.sql_unit_of_work_factory(engine)` is what the use cases are given.
"""
