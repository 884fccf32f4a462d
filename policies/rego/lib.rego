# agentgov's Rego library: pieces a policy of your own builds on instead of copying (docs/policies.md).
#
#     package agentgov
#     import rego.v1
#     import data.agentgov.lib
#
#     default allow := false
#     allow if lib.session                                          # MCP handshake, pings, listings
#     allow if { "intern" in input.subject.roles; input.resource.id == "search.web" }
#     decision := lib.answer(allow, lib.denials)
#
# `lib.answer` turns a yes/no and the library's denials into the decision contract (reasons, and
# the status: 401 before 403 before 429). The budget and secret denials are also enforced by their
# hooks whatever a policy says (budgets.enforce, pii.secrets); here a policy can name them itself.
package agentgov.lib

import rego.v1

# ---- the MCP session every client needs ----

# The session methods any authenticated caller may use (data.agentgov.session.methods: initialize,
# ping, notifications/*, the listings).
session_method if {
	input.action.kind == "mcp.session"
	input.action.name in data.agentgov.session.methods
	input.subject.authenticated == true
}

# tools/list: allowed, and the answer is filtered tool by tool (each tool is asked as a tool.call
# with context.phase "list"), so a caller sees only what it may call.
tool_listing if {
	input.action.kind == "tool.list"
	input.subject.authenticated == true
}

session if session_method

session if tool_listing

# ---- the catalog (data.agentgov.catalog.<type>.<id>: {roles[], …}) ----

# The catalog entry of the resource acted on (undefined when it is not catalogued).
catalog_entry := data.agentgov.catalog[input.resource.type][input.resource.id]

# One of the caller's roles is granted the resource in the catalog.
catalog_grant if {
	some role in catalog_entry.roles
	role in input.subject.roles
}

# ---- what refuses a request whatever grants it ----

denials contains "unauthenticated" if not input.subject.authenticated

denials contains "secret_detected" if count(input.pii.secrets) > 0

denials contains "budget_exhausted" if input.budget.exhausted == true

denials contains "budget_insufficient" if input.budget.estimated_tokens > input.budget.remaining_tokens

budget_reasons := {"budget_exhausted", "budget_insufficient"}

# PII types found in the request (names only: the values never reach a policy).
pii_types := {t | some t in input.pii.types}

# ---- the decision ----

# The decision document for `allowed` (a policy's yes/no) and `refusals` (reasons that deny it whatever
# it says, e.g. `denials`): the status is 401 for an unknown caller, 429 when only budgets refuse,
# else 403; a refusal with no reason is `default_deny`.
answer(allowed, refusals) := {"allow": true, "reasons": ["allowed"], "status": 200, "obligations": _none} if {
	allowed == true
	count(refusals) == 0
} else := {"allow": false, "reasons": sort(refusals), "status": status_for(refusals), "obligations": _none} if {
	count(refusals) > 0
} else := {"allow": false, "reasons": ["default_deny"], "status": 403, "obligations": _none}

status_for(refusals) := 401 if "unauthenticated" in refusals
else := 429 if {
	count(refusals) > 0
	count(refusals - budget_reasons) == 0
}
else := 403

_none := {"redact": [], "headers": {}}
