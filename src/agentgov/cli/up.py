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

import click

from agentgov.cli.output import EXIT_ERROR
from agentgov.cli.stack import LocalStack
from agentgov.engine.policy.library import default_policy_path


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


@click.command()
@click.option("--policies", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Policy folder (default: ./policies if there is one, else the shipped library).")
@click.option("--engine", type=click.Choice(["rego", "cedar"]), default="rego", show_default=True)
@click.option("--workers", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option("--check", "check_only", is_flag=True, help="Run the demo calls, print the answers, stop.")
@click.option("--keep", is_flag=True, help="Keep the working folder (config, logs) after stopping.")
def up(policies: Path | None, engine: str, workers: int, check_only: bool, keep: bool) -> None:
    """Start a local Envoy + agentgov + demo backend and print curl commands to try."""
    policies = policies or default_policy_path()
    stack = LocalStack(policies=policies, engine=engine, workers=workers, data_api=True, ext_proc=True,
                       keep_workdir=keep)
    signal.signal(signal.SIGTERM, _exit_on_signal)  # `finally` below then stops every child process
    try:
        stack.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        stack.stop()
        click.echo(f"could not start the stack: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    click.echo(f"Envoy listening on {stack.url} (ext_authz over {stack.chosen_transport}, engine {engine})")
    click.echo(f"agentgov workers: HTTP ext_authz and AuthZEN on {list(stack.agentgov_http_ports)}, "
               f"gRPC (ext_proc, agentgov.v1.DecisionService) on {list(stack.agentgov_ports)}; "
               f"OPA Data API on {stack.data_api_port}")
    click.echo(f"logs and config: {stack.workdir}" + ("" if keep else " (removed on exit; --keep keeps it)") + "\n")
    try:
        for title, token, body, url in demo_calls(stack):
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
        stack.stop()


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
