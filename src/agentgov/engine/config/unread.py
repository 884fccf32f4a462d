"""Hooks whose results the policy never reads: said once, at `serve` and `check --config`.

A hook that computes figures for the policy (the budget hook's `input.budget`, the PII hook's
`input.pii`) does nothing for a policy that never looks at them, unless the hook enforces its
result itself (budgets.enforce and pii.secrets default to `hook`). A policy written from scratch
often does not read them: this says so in one line per hook instead of letting an exhausted
budget or a leaked record through in silence. A text check of the policy sources (comments
removed): it can be fooled by a policy that names the field in a string, never the other way.
"""

from __future__ import annotations

import re

from agentgov.engine.config.settings import Config
from agentgov.engine.policy.sources import PolicySources

_COMMENT = {"rego": re.compile(r"#[^\n]*"), "cedar": re.compile(r"//[^\n]*")}
_READS = {
    ("rego", "budget"): re.compile(r"\binput\s*(?:\.\s*budget\b|\[\s*\"budget\"\s*\])"),
    ("rego", "pii"): re.compile(r"\binput\s*(?:\.\s*pii\b|\[\s*\"pii\"\s*\])"),
    ("cedar", "budget"): re.compile(r"\bcontext\s*\.\s*budget\b"),
    ("cedar", "pii"): re.compile(r"\bcontext\s*\.\s*pii\b"),
}
LIB_PACKAGE = re.compile(r"^package\s+agentgov\.lib\s*$", re.MULTILINE)
_LIB_USE = re.compile(r"\blib\s*\.\s*(?:denials|pii_types|answer)\b|\bdata\.agentgov\.lib\.(?:denials|pii_types)\b")


def policy_texts(sources: PolicySources, engine: str) -> list[str]:
    """The policy sources that can decide (tests left out; agentgov's Rego library only when a
    policy uses the pieces of it that read the hooks' figures), comments removed."""
    if engine == "cedar":
        return [_COMMENT["cedar"].sub("", text) for _, text in sources.cedar]
    texts = [_COMMENT["rego"].sub("", text) for _, text in sources.rego]
    own = [t for t in texts if not LIB_PACKAGE.search(t)]
    uses_lib = any(_LIB_USE.search(t) for t in own)
    return own + ([t for t in texts if LIB_PACKAGE.search(t)] if uses_lib else [])


def unread_results(cfg: Config, sources: PolicySources) -> list[str]:
    """One warning per hook whose result the configured policy never reads."""
    if cfg.engine not in ("rego", "cedar") or cfg.input_format != "agentgov":
        return []  # a remote OPA's policies, or OPA-Envoy inputs (hook results under input.agentgov), are not here
    texts = policy_texts(sources, cfg.engine)
    reads = {field: any(_READS[(cfg.engine, field)].search(t) for t in texts) for field in ("budget", "pii")}
    where = "context" if cfg.engine == "cedar" else "input"
    warnings = []
    if cfg.budgets is not None and not reads["budget"] and cfg.budgets.get("enforce", "hook") == "policy":
        warnings.append(f"budgets.enforce is policy, but the policy never reads {where}.budget: an exhausted "
                        "budget is not refused (set budgets.enforce: hook, or read it)")
    if cfg.pii.get("enabled", True) is not False and not reads["pii"]:
        secrets = "not refused either (pii.secrets is policy)" if cfg.pii.get("secrets") == "policy" \
            else "still refused by the pii hook"
        warnings.append(f"the pii hook finds PII, but the policy never reads {where}.pii: PII passes unredacted "
                        f"and unrefused; secrets are {secrets}")
    return warnings
