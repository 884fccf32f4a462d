"""Prometheus metrics, served on each worker's metrics port."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DECISIONS = Counter("agentgov_decisions_total", "Decisions by outcome and first reason", ["outcome", "reason"])
LATENCY = Histogram("agentgov_check_seconds", "Time to answer one Check",
                    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
