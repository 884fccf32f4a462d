"""The shipped policy library (Rego, Cedar, data, cases, demo requests), packaged as `agentgov.library`
so that `agentgov demo` and `agentgov test` work from an installed wheel. Not Python: policy files."""
