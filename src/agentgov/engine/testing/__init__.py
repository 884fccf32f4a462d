"""Policy testing: Rego unit tests and engine-independent YAML decision cases."""
