"""Decision backends: each turns a policy input document into a `Decision`, and never raises."""

from agentgov.engine.backends.base import DecisionBackend, Explanation

__all__ = ["DecisionBackend", "Explanation"]
