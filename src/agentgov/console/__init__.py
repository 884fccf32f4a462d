"""The operators' web console: decisions, refusals, budgets, approvals, audit and policy at a glance."""
