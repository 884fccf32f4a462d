"""agentgov.cli: the `agentgov` command, a thin layer over agentgov.engine."""
