"""Decision hooks: identity (and, as they arrive, PII, budget, audit). Never import server/ or cli/."""
