"""The operators' console, in a real browser (Debian's chromium driven by Selenium through its
chromedriver) against a real stack (Envoy + `agentgov serve` with `console:` + demo backend): sign
in, watch a refused request appear, approve a pending call and see the agent's retry pass, see a
budget bar move, chart refusals, run verify, read the policy page. Its security (sessions, CSRF,
origin, headers) is checked over plain HTTP.

Set AGENTGOV_SCREENSHOTS=DIR to keep a screenshot of each page (docs/console.md shows them)."""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from agentgov.cli.stack import LocalStack
from tests.browser import chromium, click, sign_in, text_of, wait
from tests.conftest import POLICIES
from tests.http_helpers import CALL, bearer, request, send

LIMIT = 50  # requests per subject per hour: the budget bar the test watches
pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    extra = {"approvals": {"store": "sqlite"}, "audit": {"dir": "audit"},
             "budgets": {"store": "sqlite", "limits": [{"name": "per-subject", "key": "subject", "window": "1h",
                                                         "requests": LIMIT}]}}
    with LocalStack(policies=POLICIES, console=True, config_extra=extra,
                    workdir=tmp_path_factory.mktemp("console")) as running:
        running.keep_workdir = True
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def screenshot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("AGENTGOV_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def admin_token(stack: LocalStack) -> str:
    return stack.keys.token("olivia", ["admin", "finance"], "acme")


@pytest.fixture(scope="module")
def signed_in(browser: WebDriver, stack: LocalStack) -> WebDriver:
    sign_in(browser, stack, admin_token(stack))
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "signed-in-as"), "olivia"))
    return browser


def refund(amount: int, order: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "payments.refund", "arguments": {"tenant_id": "acme", "order": order,
                                                                 "amount_usd": amount}}}


# --- in the browser ------------------------------------------------------------------------------

def test_sign_in_needs_a_verified_token_with_the_admin_role(browser: WebDriver, stack: LocalStack) -> None:
    sign_in(browser, stack, "not-a-jwt")
    assert "not authenticated" in wait(browser).until(ec.presence_of_element_located((By.ID, "login-error"))).text
    sign_in(browser, stack, stack.keys.token("alice", ["analyst"], "acme"))
    assert "needs the role admin" in browser.find_element(By.ID, "login-error").text
    screenshot(browser, "login")
    browser.get(stack.console_url + "/budgets")  # still not signed in: the sign-in page, then back here
    assert browser.current_url.endswith("/login?next=%2Fbudgets") or browser.current_url.endswith("/login?next=/budgets")


def test_a_refused_request_appears_live_with_its_detail(signed_in: WebDriver, stack: LocalStack) -> None:
    browser = signed_in
    browser.get(stack.console_url + "/decisions")
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#decision-rows tr")))
    status, headers, _ = send(stack, "/mcp", CALL, bearer(stack.keys.token("dev1", ["developer"], "acme")))
    assert status == 403
    decision_id = headers["x-agentgov-decision-id"]
    row = f'#decision-rows tr[data-decision-id="{decision_id}"]'
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, row)))
    shown = text_of(browser, row)
    assert "refused 403" in shown
    assert "default_deny" in shown
    assert "dev1" in shown
    # Filtering: only alice's decisions; the refused one disappears.
    browser.find_element(By.NAME, "subject").send_keys("alice")
    wait(browser).until(ec.invisibility_of_element_located(
        (By.CSS_SELECTOR, f'#decision-rows tr[data-decision-id="{decision_id}"]')))
    browser.find_element(By.NAME, "subject").clear()
    screenshot(browser, "decisions")
    browser.get(f"{stack.console_url}/decisions/{decision_id}")
    assert "default_deny" in browser.find_element(By.ID, "reasons").text
    assert "chain" in browser.page_source
    screenshot(browser, "decision")


def approve_in_console(browser: WebDriver, stack: LocalStack, amount: int, order: str) -> str:
    """sam's refund waits for approval; olivia (signed in) approves it on the approvals page."""
    sam = bearer(stack.keys.token("sam", ["support"], "acme"))
    status, _, answer = send(stack, "/mcp", refund(amount, order), sam)
    assert status == 403
    approval_id: str = answer["error"]["data"]["approval_id"]
    browser.get(stack.console_url + "/approvals")
    row = f'#approval-rows tr[data-approval-id="{approval_id}"]'
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, row)))
    shown = text_of(browser, row)
    assert "payments.refund" in shown
    assert f'"amount_usd":{amount}' in shown.replace(" ", "")  # the approver sees the exact call
    screenshot(browser, "approvals")
    click(browser, row + " button.approve")
    wait(browser).until(ec.presence_of_element_located((By.ID, "approval-notice")))
    assert f"{approval_id} approved by olivia" in text_of(browser, "#approval-notice")
    return approval_id


def test_a_pending_call_is_approved_in_the_console_and_the_retry_passes(signed_in: WebDriver,
                                                                       stack: LocalStack) -> None:
    browser = signed_in
    sam = bearer(stack.keys.token("sam", ["support"], "acme"))
    approval_id = approve_in_console(browser, stack, 480, "K-1")
    row = f'#approval-rows tr[data-approval-id="{approval_id}"]'
    assert send(stack, "/mcp", refund(480, "K-1"), sam)[0] == 200  # the agent's retry passes, once
    assert send(stack, "/mcp", refund(480, "K-1"), sam)[0] == 403
    wait(browser).until(lambda _: text_of(browser, row + " td.status") == "used")


def test_self_approval_is_refused_in_the_console_too(browser: WebDriver, stack: LocalStack) -> None:
    sue = stack.keys.token("sue", ["admin", "finance", "support"], "acme")
    status, _, answer = send(stack, "/mcp", refund(333, "S-1"), bearer(sue))
    assert status == 403
    approval_id = answer["error"]["data"]["approval_id"]
    browser.delete_all_cookies()
    sign_in(browser, stack, sue)
    browser.get(stack.console_url + "/approvals")
    row = f'#approval-rows tr[data-approval-id="{approval_id}"]'
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, row)))
    click(browser, row + " button.approve")
    wait(browser).until(ec.presence_of_element_located((By.ID, "approval-error")))
    assert "own request" in text_of(browser, "#approval-error")
    browser.delete_all_cookies()
    sign_in(browser, stack, admin_token(stack))  # back to olivia for the tests that follow
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "signed-in-as"), "olivia"))


def _meter(browser: WebDriver, key: str) -> float:
    found = browser.find_elements(By.CSS_SELECTOR, f'tr[data-budget="{key}"] meter')
    return float(found[0].get_attribute("value") or 0) if found else -1.0


def test_a_budget_bar_moves(signed_in: WebDriver, stack: LocalStack) -> None:
    browser = signed_in
    alice = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    assert send(stack, "/mcp", CALL, alice)[0] == 200
    browser.get(stack.console_url + "/budgets")
    key = "per-subject|subject=alice"
    wait(browser).until(lambda _: _meter(browser, key) > 0)
    before = _meter(browser, key)
    for _ in range(5):
        assert send(stack, "/mcp", CALL, alice)[0] == 200
    wait(browser).until(lambda _: _meter(browser, key) >= before + 5 / LIMIT - 1e-9)
    screenshot(browser, "budgets")


def test_refusals_are_charted(signed_in: WebDriver, stack: LocalStack) -> None:
    browser = signed_in
    send(stack, "/mcp", CALL, bearer(stack.keys.token("dev2", ["developer"], "acme")))
    browser.get(stack.console_url + "/refusals")
    wait(browser).until(lambda _: int(browser.find_element(By.ID, "by-reason").get_attribute("data-total") or 0) >= 2)
    assert "refusals in the window" in browser.find_element(By.ID, "refusal-total").text
    screenshot(browser, "refusals")


def test_verify_runs_from_the_audit_page(signed_in: WebDriver, stack: LocalStack) -> None:
    browser = signed_in
    approve_in_console(browser, stack, 210, "V-1")  # so the approvals chain exists, whatever ran before
    browser.get(stack.console_url + "/audit")
    assert "-w0" in browser.page_source  # the worker's chain is listed
    browser.find_element(By.ID, "run-verify").click()
    report = wait(browser).until(ec.presence_of_element_located((By.ID, "verify-report")))
    assert "Intact" in report.text
    assert "-approvals" in report.text  # the console's approval went into the approvals chain
    screenshot(browser, "audit")


def test_the_policy_page_names_the_active_revision(signed_in: WebDriver, stack: LocalStack) -> None:
    browser = signed_in
    browser.get(stack.console_url + "/policy")
    assert re.search(r"sha256:[0-9a-f]{12}", browser.find_element(By.ID, "active-revision").text)
    screenshot(browser, "policy")


# --- over plain HTTP: the console's security -----------------------------------------------------

def _session(stack: LocalStack, token: str) -> tuple[str, str]:
    """Sign in as a browser would (login cookie + form): the session cookie and the page's CSRF token."""
    status, headers, page = request(stack.console_url + "/login", "GET")
    assert status == 200
    login_cookie = headers["set-cookie"].split(";", 1)[0]
    login_csrf = re.search(rb'name="login_csrf" value="([^"]+)"', page)
    assert login_csrf is not None
    form = urllib.parse.urlencode({"login_csrf": login_csrf.group(1).decode(), "token": token}).encode()
    status, headers, _ = _no_redirect(stack, "/login", form, {"cookie": login_cookie})
    assert status == 303, status
    cookie = next(c for c in headers["set-cookie"].splitlines() if c.startswith("agentgov_console="))
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    session = cookie.split(";", 1)[0]
    status, _, page = request(stack.console_url + "/decisions", "GET", headers={"cookie": session})
    csrf = re.search(rb'"X-CSRF-Token": "([^"]+)"', page)
    assert csrf is not None
    return session, csrf.group(1).decode()


def _no_redirect(stack: LocalStack, path: str, form: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", stack.console_port, timeout=10)
    try:
        connection.request("POST", path, form, {"content-type": "application/x-www-form-urlencoded", **headers})
        response = connection.getresponse()
        headers: dict[str, str] = {}
        for name, value in response.getheaders():  # every Set-Cookie kept, one per line
            headers[name.lower()] = f"{headers[name.lower()]}\n{value}" if name.lower() in headers else value
        return response.status, headers, response.read()
    finally:
        connection.close()


def test_every_page_needs_a_session_and_every_action_a_csrf_token(stack: LocalStack) -> None:
    for path in ("/decisions", "/budgets/rows", "/approvals", "/audit", "/policy", "/refusals/data"):
        status, headers, _ = request(stack.console_url + path, "GET", headers={"HX-Request": "true"})
        assert (status, headers.get("hx-redirect")) == (401, "/login")
    assert _no_redirect(stack, "/audit/verify", b"", {})[0] == 303  # no session: to the sign-in page
    session, csrf = _session(stack, admin_token(stack))
    missing = _no_redirect(stack, "/audit/verify", b"", {"cookie": session})
    assert missing[0] == 403
    assert b"CSRF" in missing[2]
    wrong = _no_redirect(stack, "/audit/verify", b"", {"cookie": session, "X-CSRF-Token": "x" + csrf})
    assert wrong[0] == 403
    foreign_chars = _no_redirect(stack, "/audit/verify", "csrf=é".encode(), {"cookie": session})
    assert foreign_chars[0] == 403  # a wrong token, never an error
    foreign = _no_redirect(stack, "/audit/verify", b"", {"cookie": session, "X-CSRF-Token": csrf,
                                                         "origin": "http://evil.example"})
    assert foreign[0] == 403
    done = _no_redirect(stack, "/audit/verify", b"", {"cookie": session, "X-CSRF-Token": csrf})
    assert done[0] == 200
    assert b"verify-report" in done[2]


def test_the_login_form_has_its_own_csrf_token(stack: LocalStack) -> None:
    form = urllib.parse.urlencode({"login_csrf": "guess", "token": admin_token(stack)}).encode()
    status, headers, page = _no_redirect(stack, "/login", form, {"cookie": "agentgov_console_login=other"})
    assert status == 403
    assert b"expired" in page
    assert not [c for c in headers.get("set-cookie", "").splitlines() if c.startswith("agentgov_console=")]


def test_answers_forbid_framing_sniffing_caching_and_foreign_scripts(stack: LocalStack) -> None:
    _, headers, page = request(stack.console_url + "/login", "GET")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert (headers["x-content-type-options"], headers["x-frame-options"], headers["cache-control"]) == \
        ("nosniff", "DENY", "no-store")
    assert b"<script>" not in page  # no inline script: the CSP would refuse it
    status, _, body = request(stack.console_url + "/static/vendor/htmx.min.js", "GET")
    assert status == 200
    assert b"htmx" in body[:2000]


def test_the_pages_never_show_a_finding_value_or_a_token(signed_in: WebDriver, stack: LocalStack) -> None:
    """A prompt with an e-mail address is redacted before the model; the console shows the finding's
    type and count, never the address; the bearer token never appears on a page."""
    alice_token = stack.keys.token("alice", ["analyst"], "acme")
    body = {"model": "gpt-4o-mini", "max_tokens": 16,
            "messages": [{"role": "user", "content": "mail jane.roe@example.org the report"}]}
    status, headers, _ = send(stack, "/v1/chat/completions", body, bearer(alice_token))
    decision_id = headers.get("x-agentgov-decision-id", "")
    browser = signed_in
    browser.get(f"{stack.console_url}/decisions/{decision_id}")
    page = browser.page_source
    assert status in (200, 403)
    assert "jane.roe" not in page
    assert alice_token not in page
    assert json.dumps(decision_id)[1:-1] in page


# --- units and the commands' error paths ---------------------------------------------------------

def test_console_settings_are_read_strictly() -> None:
    from agentgov.console.settings import ConsoleConfigError, console_settings

    assert console_settings({"port": 9393}).host == "127.0.0.1"
    for bad in ({}, {"port": "9393"}, {"port": 70000}, {"port": True}, {"port": 1, "admin_role": ""},
                {"port": 1, "session_ttl_s": 5}, {"port": 1, "secure_cookie": "yes"}, {"port": 1, "colour": "red"}):
        with pytest.raises(ConsoleConfigError):
            console_settings(bad)


def test_missing_browser_libraries_are_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from agentgov.console import app

    monkeypatch.setattr(app, "STATIC", tmp_path)
    with pytest.raises(app.ConsoleAssetsMissing, match="make console-assets"):
        app.check_assets()


def test_a_bad_console_section_stops_serve_and_console_with_one_line(tmp_path: Path, run_cli: Any) -> None:
    config = tmp_path / "agentgov.yaml"
    config.write_text(f"policy: {{paths: [{POLICIES}]}}\nconsole: {{port: 9393, admin_role: ''}}\n")
    for args in (("serve", "--config", str(config)), ("console", "--config", str(config))):
        result = run_cli(*args)
        assert result.exit_code == 1, result.output
        assert "admin_role" in result.output
        assert "Traceback" not in result.output
    no_port = tmp_path / "no-port.yaml"
    no_port.write_text(f"policy: {{paths: [{POLICIES}]}}\n")
    result = run_cli("console", "--config", str(no_port))
    assert result.exit_code == 1
    assert "console.port" in result.output


def test_the_audit_reader_skips_what_is_not_a_record_and_filters(tmp_path: Path) -> None:
    from agentgov.console.views import decisions, recent_records, refusals

    lines = [
        {"decision_id": "a", "time": "2026-12-03T10:00:01+00:00", "phase": "request", "allow": False, "status": 403,
         "reasons": ["default_deny"], "subject": {"id": "dev1", "tenant": "acme"},
         "actions": [{"kind": "tool.call", "name": "crm.query"}]},
        {"decision_id": "b", "time": "2026-12-03T10:00:02+00:00", "phase": "request", "allow": True, "status": 200,
         "reasons": ["tool_granted"], "subject": {"id": "alice", "tenant": "acme"},
         "actions": [{"kind": "tool.call", "name": "crm.query"}]},
        {"decision_id": "c", "time": "2026-12-03T10:00:03+00:00", "phase": "shadow", "allow": False,
         "subject": {"id": "alice"}},
    ]
    text = "\n".join(json.dumps(line) for line in lines[:2]) + "\nnot json\n" + json.dumps(lines[2]) + "\n"
    (tmp_path / "node-w0-000000000001.jsonl").write_text(text)
    records = recent_records(tmp_path)
    assert [r["decision_id"] for r in records] == ["c", "b", "a"]  # newest first; the bad line skipped
    assert [r["id"] for r in decisions(records, {})] == ["b", "a"]  # shadow flips are not decisions
    assert [r["id"] for r in decisions(records, {"decision": "deny"})] == ["a"]
    assert [r["id"] for r in decisions(records, {"subject": "ALI"})] == ["b"]
    assert [r["id"] for r in decisions(records, {"reason": "granted", "action": "crm"})] == ["b"]
    from datetime import UTC, datetime

    chart = refusals(records, minutes=5, now=datetime(2026, 12, 3, 10, 2, tzinfo=UTC))
    assert chart["by_reason"] == {"default_deny": [0, 0, 1, 0, 0]}
    assert chart["by_subject"] == {"dev1": 1}
    assert recent_records(tmp_path / "missing") == []


def test_a_bundle_source_is_shown_without_its_credentials() -> None:
    from agentgov.console.app import _redacted

    assert _redacted("https://user:secret@bundles.example.com/b.tar.gz") == "https://…@bundles.example.com/b.tar.gz"
    assert _redacted("oci://registry.example.com/policies:1") == "oci://registry.example.com/policies:1"


def test_after_sign_in_the_console_goes_only_to_its_own_pages() -> None:
    from agentgov.console.app import _safe_next

    assert _safe_next("/approvals/apr_1/approve?exp=1&sig=x") == "/approvals/apr_1/approve?exp=1&sig=x"
    for foreign in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "evil", "/login?next=/x",
                    "/static/console.js"):
        assert _safe_next(foreign) == ""
