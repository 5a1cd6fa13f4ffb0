"""Logs, metrics and traces: the adapters to structlog, prometheus-client and OpenTelemetry."""
