"""The database side: the only package that speaks SQL or imports a driver.

``engine`` (pool) and ``translate`` (driver errors as ours), ``schema`` (the tables, once),
``migrations`` (alembic), ``writes`` (the write path), ``registry`` and ``leases`` (the worker's
tables), ``reads`` (read models for reports, status and export), ``settlement`` (settlement's
SQL), and ``store`` (the one :class:`~ingest.db.store.Store` over all of them).
"""
