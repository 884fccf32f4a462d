"""Approvers are told: each new approval request is POSTed to real HTTP receivers on loopback (a
Slack-compatible message with signed, expiring approve/deny links, and a JSON document with a bearer
token from the environment), never with the call's arguments; a link opens the console (sign-in
first, then back to it), where the approver confirms as themselves and the agent's retry passes; an
altered or expired link is refused; deliveries and failures are audit records of the approval."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from agentgov.cli.stack import LocalStack
from agentgov.engine.approvals.links import LinkSigner, link_problem
from agentgov.engine.approvals.settings import ApprovalsConfigError, settings_from_config
from tests.browser import chromium, submit_sign_in, wait
from tests.conftest import POLICIES, REPO
from tests.http_helpers import LoopbackServer, bearer, request, send
from tests.support import wait_for

pytestmark = pytest.mark.envoy
AGENTGOV = str(REPO / ".venv/bin/agentgov")


class Receiver(LoopbackServer):
    """Takes webhook POSTs: `/slack` and `/json` accept, `/reject` answers 400."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.lock = threading.Lock()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with owner.lock:
                    owner.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(400 if self.path == "/reject" else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        return Handler

    def to(self, path: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        with self.lock:
            return [(h, b) for p, h, b in self.received if p == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = LocalStack(policies=POLICIES, console=True, workdir=tmp_path_factory.mktemp("webhooks"),
                         env_extra={"HOOK_TOKEN": "receiver-secret"})
    (running.workdir / "links.key").write_text(secrets.token_urlsafe(48))
    running.config_extra = {
        "audit": {"dir": "audit"},
        "approvals": {"store": "sqlite",
                      "webhooks": [{"url": receiver.url + "/slack", "format": "slack"},
                                   {"url": receiver.url + "/json", "format": "json", "token_env": "HOOK_TOKEN"},
                                   {"url": receiver.url + "/reject"}],
                      "links": {"base_url": running.console_url, "key_file": "links.key", "ttl_s": 600}}}
    with running:
        running.keep_workdir = True
        yield running


def refund(amount: int, order: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "payments.refund", "arguments": {"tenant_id": "acme", "order": order,
                                                                 "amount_usd": amount}}}


def _story(stack: LocalStack, approval_id: str) -> list[tuple[str, str]]:
    result = subprocess.run([AGENTGOV, "audit", "query", "--approval", approval_id, "--config",
                             str(stack.workdir / "agentgov.yaml")], capture_output=True, text=True, timeout=60)
    return [(r["approval"]["event"], ",".join(r["reasons"])) for r in map(json.loads, result.stdout.splitlines())]


def _without_tokens(text: str) -> str:
    """A message with its links, ids, hashes and epoch times taken out: those are random or time
    dependent and may hold "720" or "W-1" by chance (an expiry of 1796372042 did)."""
    text = re.sub(r"https?://[^\"\s]+", "", text)
    text = re.sub(r"\bapr_[0-9a-f]+\b", "", text)
    text = re.sub(r"\b(?:sha256:)?[0-9a-f]{16,}\b", "", text)
    return re.sub(r"\b\d{9,}\b", "", text)


def test_a_new_request_is_posted_to_the_webhooks_and_approved_through_its_link(stack: LocalStack,
                                                                             receiver: Receiver) -> None:
    sam = bearer(stack.keys.token("sam", ["support"], "acme"))
    status, _, answer = send(stack, "/mcp", refund(720, "W-1"), sam)
    assert status == 403
    approval_id = answer["error"]["data"]["approval_id"]
    assert wait_for(lambda: receiver.to("/slack") and receiver.to("/json"), 15)
    # Asked again while pending: no second notification.
    assert send(stack, "/mcp", refund(720, "W-1"), sam)[0] == 403

    (_, slack), = receiver.to("/slack")
    buttons = {e["action_id"]: e["url"] for b in slack["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert set(buttons) == {"agentgov_approve", "agentgov_deny"}
    assert approval_id in slack["text"]
    approve = buttons["agentgov_approve"]
    assert approve.startswith(f"{stack.console_url}/approvals/{approval_id}/approve?exp=")
    (headers, doc), = receiver.to("/json")
    assert headers["authorization"] == "Bearer receiver-secret"  # from the environment, by reference
    assert (doc["type"], doc["approval"]["id"], doc["approval"]["approvers"]) == \
        ("approval.requested", approval_id, ["finance"])
    assert doc["links"]["approve"].split("?")[0] == approve.split("?")[0]
    assert doc["status_url"].endswith(approval_id)
    for body in (slack, doc):  # never the arguments: only their hash
        shown = _without_tokens(json.dumps(body))
        assert "amount_usd" not in shown
        assert "720" not in shown
        assert "W-1" not in shown

    # The link: sign in first, then the confirmation page with the exact call, then approve as yourself.
    with chromium() as browser:
        browser.get(approve)
        assert "/login?next=" in browser.current_url
        submit_sign_in(browser, stack.keys.token("olivia", ["admin", "finance"], "acme"))
        arguments = wait(browser).until(ec.presence_of_element_located((By.ID, "confirm-arguments")))
        assert '"amount_usd": 720' in arguments.text
        browser.find_element(By.ID, "confirm").click()
        wait(browser).until(ec.text_to_be_present_in_element((By.TAG_NAME, "main"), f"{approval_id} approved by olivia"))
    assert send(stack, "/mcp", refund(720, "W-1"), sam)[0] == 200

    assert wait_for(lambda: [e for e, _ in _story(stack, approval_id)].count("notified") == 2
                    and "notify_failed" in [e for e, _ in _story(stack, approval_id)], 20)
    story = _story(stack, approval_id)
    assert story[0][0] == "requested"
    assert ("approved", "approval_approved") in story
    assert "used" in [e for e, _ in story]
    assert any("HTTP 400" in why for e, why in story if e == "notify_failed")  # the receiver that refused
    assert len(receiver.to("/reject")) == 1  # a 4xx is not retried


def test_an_altered_or_expired_link_is_refused(stack: LocalStack, receiver: Receiver) -> None:
    status, _, answer = send(stack, "/mcp", refund(650, "W-2"), bearer(stack.keys.token("sam", ["support"], "acme")))
    assert status == 403
    approval_id = answer["error"]["data"]["approval_id"]
    assert wait_for(lambda: any(d["approval"]["id"] == approval_id for _, d in receiver.to("/json")), 15)
    link = next(d["links"]["approve"] for _, d in receiver.to("/json") if d["approval"]["id"] == approval_id)
    with chromium() as browser:
        browser.get(stack.console_url + "/login")
        submit_sign_in(browser, stack.keys.token("olivia", ["admin", "finance"], "acme"))
        for altered, why in ((link.replace("/approve?", "/deny?"), "does not verify"),
                             (link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"), "does not verify"),
                             (link.replace(approval_id, "apr_" + "0" * 24), "does not verify")):
            browser.get(altered)
            assert why in browser.find_element(By.TAG_NAME, "main").text
        key = (stack.workdir / "links.key").read_bytes().strip()
        expired = LinkSigner(key, stack.console_url, ttl_s=-1).link(approval_id, "approve")
        browser.get(expired)
        assert "expired" in browser.find_element(By.TAG_NAME, "main").text
    # Nothing was decided by any of them.
    status_doc = json.loads(request(f"http://127.0.0.1:{stack.agentgov_http_ports[0]}/approvals/v1/{approval_id}",
                                    "GET")[2])
    assert status_doc["status"] == "pending"


def test_link_signatures_and_webhook_settings_are_checked() -> None:
    key = b"k" * 32
    link = LinkSigner(key, "https://console.example.com", 600).link("apr_1", "approve", now=1000)
    query = parse_qs(urlsplit(link).query)
    exp, sig = query["exp"][0], query["sig"][0]
    assert link_problem(key, "apr_1", "approve", exp, sig, now=1001) is None
    assert "expired" in str(link_problem(key, "apr_1", "approve", exp, sig, now=1600))
    assert "verify" in str(link_problem(b"x" * 32, "apr_1", "approve", exp, sig, now=1001))
    assert "verify" in str(link_problem(key, "apr_1", "approve", str(int(exp) + 1), sig, now=1001))
    assert link_problem(key, "apr_1", "delete", exp, sig, now=1001) == "not an approval link"
    for bad_exp, bad_sig in (("²", sig), ("9" * 40, sig), (exp, "é" + sig), (exp, "")):
        assert link_problem(key, "apr_1", "approve", bad_exp, bad_sig, now=1001) is not None  # never raises
    for bad in ({"webhooks": {"url": "https://x"}}, {"webhooks": [{"url": "ftp://x"}]},
                {"webhooks": [{"url": "https://x", "format": "teams"}]},
                {"webhooks": [{"url": "https://x", "token_env": "A-B"}]}, {"webhooks": [{"url": "https://x", "x": 1}]},
                {"links": {"base_url": "https://c"}}, {"links": {"base_url": "c", "key_file": "k"}},
                {"links": {"base_url": "https://c", "key_file": "k", "ttl_s": 10}}):
        with pytest.raises(ApprovalsConfigError):
            settings_from_config(bad)


def test_a_short_or_missing_link_key_stops_serve(tmp_path: Path, run_cli: Any) -> None:
    (tmp_path / "short.key").write_text("too-short")
    for key_file in ("short.key", "missing.key"):
        config = tmp_path / "agentgov.yaml"
        config.write_text(json.dumps({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False},
                                      "approvals": {
            "webhooks": [{"url": "https://hooks.example.com/x"}],
            "links": {"base_url": "https://console.example.com", "key_file": key_file}}}))
        result = run_cli("serve", "--config", str(config))
        assert result.exit_code == 1, result.output
        assert "key_file" in result.output
        assert "Traceback" not in result.output
