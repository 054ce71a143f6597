"""snooker-ingest: live snooker actions from the DDE feed into PostgreSQL, exactly once."""

__version__ = "0.1.0"
