"""Policy bundles in OPA's format: build (deterministic), read (bounded, strict), sign and verify."""
