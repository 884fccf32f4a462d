"""agentgov: the governance layer between AI agents and the backends they touch."""

__version__ = "0.1.0"
