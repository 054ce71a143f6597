"""Benchmarks of snooker-ingest against the physical limits of the same machine (``make bench``)."""
