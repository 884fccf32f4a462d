# agentgov shipped policy library (Rego). The same semantics live in ../cedar/agentgov.cedar and
# are checked against each other by the shared cases in ../tests/.
#
# Deny by default. A request is allowed when at least one grant applies and no denial does.
# The result is data.agentgov.decision: {allow, reasons[], status, obligations{redact[], headers{}}}.
package agentgov

import rego.v1

# The catalog entry of the resource being acted on (undefined when it is not catalogued). The
# catalog is read by name: a rule that read the whole of `data` would depend on itself, and OPA
# refuses that (agentgov check does too).
entry := data.agentgov.catalog[input.resource.type][input.resource.id]

roles := {r | some r in input.subject.roles}

pii_present if count(input.pii.types) > 0

# What is being decided: the request (context.phase absent or "request"), the backend's response
# (pii holds the response's findings), or whether a tool may be listed ("list": no arguments yet).
# Argument rules judge requests; responses and listings are judged by grants and content.
request_phase if not input.context.phase

request_phase if input.context.phase == "request"

justified if {
	is_string(input.context.justification)
	input.context.justification != ""
}

role_granted if {
	some r in entry.roles
	r in roles
}

# ---- grants: what can allow a request ----

grants contains "tool_granted" if {
	input.action.kind == "tool.call"
	input.resource.type == "tool"
	role_granted
}

grants contains "model_granted" if {
	input.action.kind == "llm.chat"
	input.resource.type == "model"
	role_granted
}

grants contains "resource_granted" if {
	input.action.kind in {"resource.read", "prompt.get"}
	input.resource.type in {"resource", "prompt"}
	role_granted
}

grants contains "session_allowed" if {
	input.action.kind == "tool.list"
	input.subject.authenticated == true
}

# Only the session methods the library names (data.agentgov.session.methods): an unknown MCP method
# is not allowed to every authenticated caller.
grants contains "session_allowed" if {
	input.action.kind == "mcp.session"
	input.action.name in data.agentgov.session.methods
	input.subject.authenticated == true
}

# Break-glass: any action, but only with a justification, and always flagged (see headers).
grants contains "break_glass" if {
	"break_glass" in roles
	justified
}

# ---- denials: what refuses a request whatever grants it ----

deny contains "unauthenticated" if not input.subject.authenticated

deny contains "secret_detected" if count(input.pii.secrets) > 0

deny contains "pii_blocked" if {
	pii_present
	entry.pii == "deny"
}

deny contains "pii_blocked_for_role" if {
	pii_present
	"contractor" in roles
}

deny contains "tenant_argument_missing" if {
	request_phase
	entry.tenant_scoped == true
	not input.arguments.tenant_id
}

deny contains "tenant_mismatch" if {
	request_phase
	entry.tenant_scoped == true
	input.arguments.tenant_id != input.subject.tenant
}

deny contains "max_tokens_exceeded" if input.arguments.max_tokens > entry.max_tokens

# A model with a cap: a request that names no output limit would get the provider's default, which
# can be far above the cap. It is refused (the client sets max_tokens, max_completion_tokens or
# max_output_tokens); null counts as not set.
deny contains "max_tokens_required" if {
	request_phase
	input.action.kind == "llm.chat"
	entry.max_tokens
	not has_output_limit
}

# A helper rule, not `not is_number(input.arguments.max_tokens)` inline: real OPA evaluates a negated
# call on an undefined reference as undefined, the embedded engine as true (the OPA test oracle caught it).
has_output_limit if is_number(input.arguments.max_tokens)

deny contains "break_glass_justification_required" if {
	"break_glass" in roles
	not justified
}

deny contains "budget_exhausted" if input.budget.exhausted == true

deny contains "budget_insufficient" if input.budget.estimated_tokens > input.budget.remaining_tokens

budget_reasons := {"budget_exhausted", "budget_insufficient"}

# ---- the decision ----

default allow := false

allow if {
	count(grants) > 0
	count(deny) == 0
}

reasons := sort(grants) if allow
else := sort(deny) if count(deny) > 0
else := ["default_deny"]

# 401 before 403 before 429: an unknown caller, then a forbidden action, then a budget that resets.
status := 200 if allow
else := 401 if "unauthenticated" in deny
else := 429 if {
	count(deny) > 0
	count(deny - budget_reasons) == 0
}
else := 403

redact := sort(input.pii.types) if {
	allow
	pii_present
	entry.pii == "redact"
	not "pii_reader" in roles
}
else := []

headers := {"x-agentgov-break-glass": "true"} if {
	allow
	"break_glass" in grants
}
else := {}

# A call the catalog marks (`approval_above_usd`, `approvers`) above its limit is allowed only once one
# of the approvers says yes to this exact call: agentgov holds it and spends the approval (docs/approvals.md).
approval := {"approvers": entry.approvers, "reason": "refund_above_limit", "ttl_s": 900, "uses": 1} if {
	request_phase
	input.action.kind == "tool.call"
	is_number(entry.approval_above_usd)
	is_number(input.arguments.amount_usd)
	input.arguments.amount_usd > entry.approval_above_usd
}

base_obligations := {"redact": redact, "headers": headers}

obligations := object.union(base_obligations, {"approval": approval}) if {
	allow
	approval
} else := base_obligations

decision := {
	"allow": allow,
	"reasons": reasons,
	"status": status,
	"obligations": obligations,
}
