"""Policy sources: finding, reading and statically checking policy files before any engine runs them."""
