"""The database side: the only package that speaks SQL or imports a driver.

``engine`` (the asyncpg pool, :class:`~ingest.db.engine.Database`) and ``translate`` (driver
errors as ours), ``schema`` (the tables, once, in SQLAlchemy Core), ``migrations`` (alembic),
``actions`` (the write path), ``registry`` and ``leases`` (the worker's tables), ``reads`` (read
models for reports, status and export), ``settlement`` (settlement's SQL), and ``store`` (the one
:class:`~ingest.db.store.Store`, composed of those repositories over one pool).
"""
