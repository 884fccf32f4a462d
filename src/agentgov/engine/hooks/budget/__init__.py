"""The budget hook: rate limits and token/spend caps, reserved before the call and settled from the
backend's reported usage after it, exact under concurrency (docs/budgets.md)."""
