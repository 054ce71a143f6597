"""What operators see: ``metrics`` (Prometheus), ``monitor`` (/metrics, /healthz, /readyz) and
``systemd`` (the notify protocol: READY, STATUS, WATCHDOG, STOPPING)."""
