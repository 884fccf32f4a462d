"""Traces of decisions (OpenTelemetry); metrics live in engine/metrics.py."""
