"""The audit hook: a hash-chained, durable, verifiable record of every decision (docs/audit.md)."""
