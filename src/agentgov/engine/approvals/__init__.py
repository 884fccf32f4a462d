"""Approvals: a human says yes to one exact call (docs/approvals.md)."""
