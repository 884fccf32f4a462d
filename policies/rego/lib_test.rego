# Rego unit tests for agentgov.lib, the pieces a policy of your own builds on.
package agentgov.lib_test

import data.agentgov.lib
import rego.v1

who := {"id": "ivy", "roles": ["intern"], "tenant": "acme", "claims": {}, "authenticated": true}

ask(kind, name, extra) := object.union({
	"subject": who, "action": {"kind": kind, "name": name},
	"resource": {"type": "tool", "id": name, "server": null}, "arguments": {},
	"pii": {"findings": [], "types": [], "secrets": []}, "budget": {}, "context": {}, "http": {},
}, extra)

test_session_methods_and_listings_for_authenticated_callers if {
	lib.session with input as ask("mcp.session", "initialize", {})
	lib.session with input as ask("mcp.session", "notifications/initialized", {})
	lib.session with input as ask("tool.list", "tools/list", {})
	not lib.session with input as ask("mcp.session", "sampling/createMessage", {})
	not lib.session with input as ask("tool.list", "tools/list", {"subject": object.union(who, {"authenticated": false})})
}

test_catalog_grant_reads_the_resource_entry if {
	lib.catalog_grant with input as ask("tool.call", "web.search", {"subject": object.union(who, {"roles": ["analyst"]})})
	not lib.catalog_grant with input as ask("tool.call", "hr.lookup", {"subject": object.union(who, {"roles": ["analyst"]})})
	not lib.catalog_grant with input as ask("tool.call", "not.catalogued", {})
}

test_denials if {
	lib.denials == set() with input as ask("tool.call", "x", {})
	lib.denials == {"secret_detected"} with input as ask("tool.call", "x", {"pii": {"secrets": ["AWS_KEY"], "types": []}})
	lib.denials == {"budget_exhausted"} with input as ask("tool.call", "x", {"budget": {"exhausted": true}})
	lib.denials == {"budget_insufficient"} with input as ask("llm.chat", "x", {"budget": {"estimated_tokens": 9, "remaining_tokens": 3}})
	lib.denials == {"unauthenticated"} with input as ask("tool.call", "x", {"subject": object.union(who, {"authenticated": false})})
	lib.pii_types == {"EMAIL"} with input as ask("tool.call", "x", {"pii": {"types": ["EMAIL"], "secrets": []}})
}

test_answer_gives_the_contract_and_the_status_order if {
	lib.answer(true, set()) == {"allow": true, "reasons": ["allowed"], "status": 200, "obligations": {"redact": [], "headers": {}}}
	lib.answer(false, set()).reasons == ["default_deny"]
	lib.answer(false, set()).status == 403
	lib.answer(true, {"budget_exhausted"}).status == 429
	lib.answer(true, {"budget_exhausted", "secret_detected"}).status == 403
	lib.answer(true, {"unauthenticated", "budget_exhausted"}).status == 401
	lib.answer(true, {"secret_detected", "budget_exhausted"}).reasons == ["budget_exhausted", "secret_detected"]
}
