"""agentgov.engine: the decision core (model, backends, policy loading, testing). Imports nothing from cli."""
