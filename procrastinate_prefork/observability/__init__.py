"""What operators see of a running fleet: Prometheus metrics, JSON log lines,
the probe port, log reopening and the redaction of what logs must not show."""
