"""The client's address is the client's, not what it claims: a policy that allows by network cannot
be walked around with X-Forwarded-For, X-Real-IP or Forwarded, on either transport, on Rego and on
Cedar; the backend sees the address Envoy trusts; behind one trusted proxy, that proxy's claim is
used and no more."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentgov.cli.stack import LocalStack
from tests.http_helpers import CALL, bearer, send
from tests.support import policy_folder

pytestmark = pytest.mark.envoy

OFFICE = "10.9.9.9"
# Allows only callers from the office address, and tells the backend which address it judged.
OFFICE_ONLY_REGO = f"""package agentgov

import rego.v1

default decision := {{"allow": false, "reasons": ["outside_office"], "status": 403}}

decision := {{"allow": true, "reasons": ["office"],
             "obligations": {{"headers": {{"x-judged-source-ip": input.context.source_ip}}}}}} if {{
	input.subject.authenticated
	input.context.source_ip == "{OFFICE}"
}}

decision := {{"allow": false, "reasons": ["outside_office"], "status": 403,
             "obligations": {{"headers": {{"x-judged-source-ip": input.context.source_ip}}}}}} if {{
	input.context.source_ip != "{OFFICE}"
}}
"""
OFFICE_ONLY_CEDAR = f"""@id("office")
permit (principal, action, resource)
when {{ context.source_ip == "{OFFICE}" }};
"""
SPOOFS = [{"x-forwarded-for": OFFICE}, {"x-real-ip": OFFICE}, {"forwarded": f"for={OFFICE}"},
          {"x-forwarded-for": f"{OFFICE}, {OFFICE}", "x-real-ip": OFFICE, "forwarded": f"for={OFFICE};proto=https"}]


def _policies(base: Path, engine: str) -> Path:
    return policy_folder(base, "office", engine, OFFICE_ONLY_REGO, OFFICE_ONLY_CEDAR)


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("engine", ["rego", "cedar"])
def test_a_spoofed_address_header_cannot_pass_a_network_rule(tmp_path: Path, transport: str, engine: str) -> None:
    with LocalStack(policies=_policies(tmp_path, engine), engine=engine, transport=transport) as stack:
        token = bearer(stack.keys.token("mallory", ["analyst"], "acme"))
        for spoof in SPOOFS:
            status, _, body = send(stack, "/mcp", CALL, {**token, **spoof})
            assert status == 403, spoof
            assert body["decision_id"]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_the_policy_and_the_backend_read_the_peer_address(tmp_path: Path, transport: str) -> None:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "policy.rego").write_text(OFFICE_ONLY_REGO.replace(f'== "{OFFICE}"', '== "127.0.0.1"')
                                        .replace(f'!= "{OFFICE}"', '!= "127.0.0.1"'))
    with LocalStack(policies=folder, transport=transport) as stack:
        token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
        status, headers, _ = send(stack, "/mcp", CALL, {**token, **SPOOFS[-1]})
        assert status == 200
        seen = json.loads(headers["x-demo-seen"])
        assert seen["x-forwarded-for"] == "127.0.0.1"  # what Envoy trusts, not what the client wrote
        assert "x-real-ip" not in seen
        assert "forwarded" not in seen
        assert seen.get("x-agentgov-decision-id")


def test_behind_one_trusted_proxy_its_claim_is_used_and_no_more(tmp_path: Path) -> None:
    """With `xff_num_trusted_hops: 1` the proxy in front appended the address it saw; entries before
    it are the client's own claims and are not believed."""
    with LocalStack(policies=_policies(tmp_path, "rego"), xff_num_trusted_hops=1) as stack:
        token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
        status, _, _ = send(stack, "/mcp", CALL, {**token, "x-forwarded-for": OFFICE})
        assert status == 200  # the trusted proxy says the client is in the office
        status, _, body = send(stack, "/mcp", CALL, {**token, "x-forwarded-for": f"{OFFICE}, 192.0.2.44"})
        assert status == 403  # the proxy saw 192.0.2.44; the client's own "10.9.9.9" is not believed
        assert body["reasons"] == ["outside_office"]


def test_a_second_envoy_cannot_take_part_of_the_listeners_traffic(tmp_path: Path) -> None:
    """The generated bootstrap turns enable_reuse_port off: a stale Envoy from an earlier run (or a
    second one started by mistake) fails to bind the listener instead of silently sharing it."""
    import subprocess

    import yaml

    from agentgov.cli.stack import envoy_binary, free_port

    with LocalStack(policies=_policies(tmp_path, "rego")) as stack:
        second = yaml.safe_load((stack.workdir / "envoy.yaml").read_text())
        second["admin"]["address"]["socket_address"]["port_value"] = free_port()
        config = tmp_path / "second-envoy.yaml"
        config.write_text(yaml.safe_dump(second))
        proc = subprocess.run([envoy_binary(), "-c", str(config), "--base-id", str(free_port()),
                               "--concurrency", "1", "--log-level", "error"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode != 0
        assert "Address already in use" in proc.stdout + proc.stderr
