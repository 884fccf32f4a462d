"""`agentgov up`: Envoy + agentgov + demo backend on this machine, with ready-to-paste curl commands.

Envoy runs both of agentgov's filters: ext_authz (who, allowed, PII findings) and ext_proc (the
redaction obligation on the request body, tool results and model output on the way back)."""

from __future__ import annotations

import json
import shlex
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click
import yaml

from agentgov.cli.configured import resolved
from agentgov.cli.output import EXIT_ERROR
from agentgov.cli.running import DEMO_KEY_FILE, forget_running, write_running
from agentgov.cli.stack import LocalStack
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.library import default_policy_path, shipped_library
from agentgov.engine.policy.problems import PolicyLoadError


def _curl(url: str, token: str | None, body: dict[str, object]) -> str:
    parts = ["curl", "-s", "-i", url, "-H", "content-type: application/json"]
    if token:
        parts += ["-H", f"authorization: Bearer {token}"]
    parts += ["-d", json.dumps(body)]
    return " ".join(shlex.quote(p) for p in parts)


def demo_calls(stack: LocalStack) -> list[tuple[str, str | None, dict[str, object], str]]:
    alice = stack.keys.token("alice", ["analyst"], "acme")
    dev = stack.keys.token("dev1", ["developer"], "acme")
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "crm.query", "arguments": {"tenant_id": "acme", "query": "open deals"}}}
    return [
        ("allowed MCP tool call (analyst → crm.query)", alice, call, f"{stack.url}/mcp"),
        ("forbidden tool (developer → crm.query): 403", dev, call, f"{stack.url}/mcp"),
        ("bad token: 401", "not-a-jwt", call, f"{stack.url}/mcp"),
        ("allowed LLM call (analyst → gpt-4o-mini)", alice,
         {"model": "gpt-4o-mini", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]},
         f"{stack.url}/v1/chat/completions"),
        ("a prompt with PII reaches the model redacted (the fake model echoes what it received)", alice,
         {"model": "gpt-4o-mini", "max_tokens": 64, "messages": [
             {"role": "user", "content": "Send the receipt to jane.doe@example.org, card 4111 1111 1111 1111"}]},
         f"{stack.url}/v1/chat/completions"),
        ("a secret in a tool argument: 403 secret_detected", alice,
         {**call, "params": {"name": "crm.query", "arguments": {"tenant_id": "acme",
                                                              "query": "is AKIAQ7RZ3KXW5MN2PL4T still valid?"}}},
         f"{stack.url}/mcp"),
        ("a refund above its limit waits for a person: 403 approval_required with an approval_id. Approve it "
         "as someone in finance, then send the same call again (it passes once):\n#   agentgov approvals approve "
         f"APPROVAL_ID --config {stack.workdir / 'agentgov.yaml'} --token \"$(agentgov token --sub fiona "
         "--role finance)\"", stack.keys.token("sam", ["support"], "acme"),
         {**call, "params": {"name": "payments.refund",
                             "arguments": {"tenant_id": "acme", "order": "A-1001", "amount_usd": 250}}},
         f"{stack.url}/mcp"),
        ("tools/list shows only the tools this caller may call", dev,
         {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, f"{stack.url}/mcp"),
        ("the same policy through OPA's Data API (no Envoy; the caller states the subject)", None,
         {"input": {"subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
                    "action": {"kind": "tool.call", "name": "crm.query"},
                    "resource": {"type": "tool", "id": "crm.query"}, "arguments": {"tenant_id": "acme"}}},
         f"http://127.0.0.1:{stack.data_api_port}/v1/data/agentgov/decision"),
        ("and through the AuthZEN Authorization API (an enforcement point that is not Envoy)", None,
         {"subject": {"type": "user", "id": "alice", "properties": {"roles": ["analyst"], "tenant": "acme"}},
          "action": {"name": "tool.call", "properties": {"arguments": {"tenant_id": "acme"}}},
          "resource": {"type": "tool", "id": "crm.query"}},
         f"http://127.0.0.1:{stack.agentgov_http_ports[0]}/access/v1/evaluation"),
    ]


# Server keys of the user's configuration that `up` keeps; the stack chooses ports, sockets, TLS and
# workers itself (it runs everything on loopback), and turns ext_proc and the Data API on.
_KEPT_SERVER_KEYS = ("allow_truncated_body", "mcp_paths", "max_batch", "log_level", "max_request_bytes", "drain_s")


def _own_configuration(config_path: Path, policies: Path | None, engine: str | None) -> dict[str, Any]:
    """LocalStack options that run the user's agentgov.yaml (policies, hooks, PII, budgets, audit) on
    this machine. Identity is the demo issuer (so `agentgov token` can mint callers for any role);
    the user's API keys are kept. Paths in the file are read from the file's folder, as serve would."""
    cfg = resolved(config_path)  # the same validation as serve: one clear error, exit 1
    doc = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    base = config_path.parent.resolve()

    def located(value: str) -> str:
        return value if value.startswith(("oci://", "http://", "https://")) or Path(value).is_absolute() \
            else str(base / value)

    policy = dict(doc.get("policy") or {})
    if policies is not None:
        policy.pop("bundle", None)
        policy["paths"] = [str(policies.resolve())]
    elif "bundle" not in policy:
        policy["paths"] = [str(base / p) for p in cfg.paths]
    if isinstance(policy.get("bundle"), str):
        policy["bundle"] = {"source": policy["bundle"]}
    if isinstance(policy.get("bundle"), dict):
        bundle = dict(policy["bundle"])
        for key in ("source", "token_file", "persist_dir"):
            if isinstance(bundle.get(key), str):
                bundle[key] = located(bundle[key])
        policy["bundle"] = bundle
    policy["engine"] = engine or cfg.engine
    extra: dict[str, Any] = {k: doc[k] for k in ("pii", "hooks") if doc.get(k) is not None}
    if doc.get("audit"):
        audit = dict(doc["audit"])
        for key in ("dir", "checkpoint_key_file"):
            if isinstance(audit.get(key), str):
                audit[key] = located(audit[key])
        extra["audit"] = audit
    if doc.get("budgets") is not None:
        budgets = dict(doc["budgets"])
        store = str(budgets.get("store", "sqlite"))
        if store.startswith("sqlite:///"):
            budgets["store"] = "sqlite:///" + located(store.removeprefix("sqlite:///"))
        extra["budgets"] = budgets
    if doc.get("approvals") is not None:
        approvals = dict(doc["approvals"])
        store = str(approvals.get("store", "sqlite"))
        if store.startswith("sqlite:///"):
            approvals["store"] = "sqlite:///" + located(store.removeprefix("sqlite:///"))
        links = approvals.get("links")
        if isinstance(links, dict) and isinstance(links.get("key_file"), str):
            approvals["links"] = {**links, "key_file": located(links["key_file"])}
        extra["approvals"] = approvals
    server = {k: v for k, v in (doc.get("server") or {}).items() if k in _KEPT_SERVER_KEYS}
    identity = {"api_keys": cfg.identity["api_keys"]} if cfg.identity.get("api_keys") else {}
    return {"policies": Path(policy.get("paths", [str(base)])[0]), "engine": policy["engine"],
            "policy_extra": {k: v for k, v in policy.items() if k != "engine"}, "config_extra": extra,
            "server_extra": server, "identity_extra": identity, "workers": max(1, min(cfg.workers, 16))}


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run your own agentgov.yaml (policies, PII, budgets, audit, hooks) behind the local Envoy.")
@click.option("--policies", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Policy folder (default: the configuration's, else ./policies, else the shipped library).")
@click.option("--engine", type=click.Choice(["rego", "cedar"]), default=None, help="[default: the configuration's, or rego]")
@click.option("--workers", type=click.IntRange(1, 16), default=None, help="[default: the configuration's, or 1]")
@click.option("--check", "check_only", is_flag=True, help="Run the demo calls, print the answers, stop.")
@click.option("--keep", is_flag=True, help="Keep the working folder (config, logs) after stopping.")
def up(config_path: Path | None, policies: Path | None, engine: str | None, workers: int | None, check_only: bool,
       keep: bool) -> None:
    """Start a local Envoy + agentgov + demo backend and print curl commands to try."""
    if config_path is not None:
        options = _own_configuration(config_path, policies, engine)
        if workers is not None:
            options["workers"] = workers
    else:
        options = {"policies": policies or default_policy_path(), "engine": engine or "rego", "workers": workers or 1,
                   # the tour shows a call that waits for a person (docs/approvals.md); the console
                   # (docs/console.md) shows it, the decisions from the audit log and a budget filling up
                   "config_extra": {"approvals": {"store": "sqlite"}, "audit": {"dir": "audit"},
                                    "budgets": {"store": "sqlite", "limits": [
                                        {"name": "requests-per-subject", "key": "subject", "window": "1h",
                                         "requests": 100}]}}}
    engine = str(options["engine"])
    stack = LocalStack(data_api=True, ext_proc=True, keep_workdir=keep, console=True, **options)
    signal.signal(signal.SIGTERM, _exit_on_signal)  # `finally` below then stops every child process
    try:
        stack.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        log = stack.log("agentgov").strip().splitlines()[-3:] if (stack.workdir / "agentgov.log").exists() else []
        stack.stop()
        click.echo(f"could not start the stack: {exc}" + "".join(f"\n  {line}" for line in log), err=True)
        raise SystemExit(EXIT_ERROR) from None
    # For `agentgov token`: the demo issuer's key (a DEMO key, this stack only) and where the stack is.
    stack.keys.save(stack.workdir / DEMO_KEY_FILE)
    write_running(stack)
    click.echo(f"Envoy listening on {stack.url} (ext_authz over {stack.chosen_transport}, engine {engine})")
    click.echo(f"agentgov workers: HTTP ext_authz and AuthZEN on {list(stack.agentgov_http_ports)}, "
               f"gRPC (ext_proc, agentgov.v1.DecisionService) on {list(stack.agentgov_ports)}; "
               f"OPA Data API on {stack.data_api_port}")
    click.echo(f"console: {stack.console_url} (sign in with the JWT from "
               "`agentgov token --sub olivia --role admin --role finance`)")
    click.echo(f"logs and config: {stack.workdir}" + ("" if keep else " (removed on exit; --keep keeps it)") + "\n")
    try:
        # The curated tour for the shipped library; for a policy of your own, one call per role it names.
        curated = config_path is None and _is_shipped_library(Path(options["policies"]))
        calls = demo_calls(stack) if curated else role_calls(stack)
        for title, token, body, url in calls:
            click.echo(f"# {title}\n{_curl(url, token, body)}\n")
            if check_only:
                status, answer = _send(url, token, body)
                click.echo(f"→ {status} {answer}\n")
        if not check_only:
            click.echo("Ctrl-C to stop.")
            while all(p.poll() is None for p in stack.procs.values()):
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        forget_running(stack)
        stack.stop()


def role_calls(stack: LocalStack) -> list[tuple[str, str | None, dict[str, object], str]]:
    """Example calls for the roles your policy's data names (the catalog's `roles`), one granted
    resource each; with no catalog, the MCP handshake and how to mint tokens for your roles."""
    try:
        paths = [Path(p) for p in stack.policy_extra.get("paths", [str(stack.policies)])]
        catalog = discover(paths).data.get("agentgov", {}).get("catalog", {})
    except PolicyLoadError:
        catalog = {}
    first: dict[str, tuple[str, str]] = {}
    for rtype in ("tool", "model"):
        for rid, entry in (catalog.get(rtype) or {}).items():
            for role in (entry or {}).get("roles", []) if isinstance(entry, dict) else []:
                first.setdefault(str(role), (rtype, str(rid)))
    calls: list[tuple[str, str | None, dict[str, object], str]] = []
    for role, (rtype, rid) in list(first.items())[:8]:
        token = stack.keys.token(f"demo-{role}", [role], "acme")
        if rtype == "tool":
            body: dict[str, object] = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                       "params": {"name": rid, "arguments": {"tenant_id": "acme"}}}
            calls.append((f"role {role} → tool {rid}", token, body, f"{stack.url}/mcp"))
        else:
            body = {"model": rid, "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
            calls.append((f"role {role} → model {rid}", token, body, f"{stack.url}/v1/chat/completions"))
    anyone = stack.keys.token("demo-user", [], "acme")
    calls.append(("the MCP handshake (any authenticated caller, with a policy on the library)", anyone,
                  {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                      "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}},
                  f"{stack.url}/mcp"))
    calls.append(("no token: 401", None, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, f"{stack.url}/mcp"))
    return calls


def _is_shipped_library(folder: Path) -> bool:
    """The shipped library, installed or as this repository's policies/ (the same catalog)."""
    shipped = shipped_library()
    if folder.resolve() == shipped.resolve():
        return True
    try:
        return discover([folder]).data == discover([shipped]).data
    except PolicyLoadError:
        return False


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _send(url: str, token: str | None, body: dict[str, object]) -> tuple[int, str]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return resp.status, resp.read().decode()[:400]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()[:400]
