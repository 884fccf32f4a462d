"""A human in the loop, through the real Envoy on Rego and Cedar: a refund above its limit is refused
with an approval id; approved by a second identity with the approvers' role it passes exactly its
number of uses; the same tool with one argument changed needs its own approval; self-approval and
an approver without the role are refused; a request nobody answered expires; every step is in the
audit log and the chains verify. Two concurrent uses of a single-use approval: one passes (SQLite
and Redis)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agentgov.cli.stack import LocalStack
from agentgov.engine.approvals.binding import Binding, argument_hash, canonical_arguments
from agentgov.engine.approvals.settings import ApprovalsConfigError, settings_from_config
from agentgov.engine.approvals.store import ApprovalRefused, SqliteApprovalStore
from agentgov.engine.backends.base import read_approval
from agentgov.engine.errors import Failure
from agentgov.engine.model import ApprovalNote, ApprovalSpec, Decision, Subject
from agentgov.engine.pipeline import Verdict
from agentgov.engine.server.decision_codec import response_from_verdict, verdict_from_response
from agentgov.engine.server.responses import denied
from tests.conftest import POLICIES, REPO
from tests.http_helpers import bearer, request, send
from tests.redis_servers import RedisServer
from tests.support import wait_for

AGENTGOV = str(REPO / ".venv/bin/agentgov")


def refund(amount: int, order: str = "A-1001", *, spaced: bool = False) -> dict[str, Any]:
    arguments: dict[str, Any] = {"tenant_id": "acme", "order": order, "amount_usd": amount}
    if spaced:  # the same call, its keys in another order (250 vs 250.0: the unit test below; Cedar
        # reads a JSON number with a fraction as a decimal, which the library's Long comparison refuses)
        arguments = {"amount_usd": amount, "order": order, "tenant_id": "acme"}
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "payments.refund", "arguments": arguments}}


@pytest.fixture(scope="module", params=["rego", "cedar"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    extra = {"approvals": {"store": "sqlite", "pending_ttl_s": 3600}, "audit": {"dir": "audit"}}
    with LocalStack(policies=POLICIES, engine=request.param, workers=2, config_extra=extra,
                    workdir=tmp_path_factory.mktemp("approvals")) as running:
        running.keep_workdir = True  # pytest's folder: it cleans it
        yield running


def cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTGOV, *args, "--config", str(stack.workdir / "agentgov.yaml")],
                          capture_output=True, text=True, timeout=60)


def call(stack: LocalStack, body: dict[str, Any], who: str = "sam") -> tuple[int, Any]:
    """The answer; a refusal that waits for an approval is a JSON-RPC error for the call's id, and
    its `data` (the fields every door carries) is returned."""
    status, _, answer = send(stack, "/mcp", body, bearer(stack.keys.token(who, ["support"], "acme")))
    if isinstance(answer, dict) and "jsonrpc" in answer and "error" in answer:
        assert (answer["id"], answer["error"]["code"]) == (body["id"], -32010)
        return status, answer["error"]["data"]
    return status, answer


def status_of(stack: LocalStack, url: str) -> dict[str, Any]:
    status, headers, text = request(url, "GET")  # the caller's status_url, as given
    assert (status, headers["cache-control"]) == (200, "no-store"), text
    doc: dict[str, Any] = json.loads(text)
    return doc


@pytest.mark.envoy
def test_an_approved_call_passes_exactly_its_uses_and_only_that_call(stack: LocalStack) -> None:
    order = f"R-{stack.engine}"
    status, answer = call(stack, refund(250, order))
    assert (status, answer["reasons"]) == (403, ["approval_required"])
    approval_id = answer["approval_id"]
    assert "finance" in answer["detail"]
    assert answer["status_url"].endswith(f"/approvals/v1/{approval_id}")
    waiting = status_of(stack, answer["status_url"])
    assert (waiting["status"], waiting["action"], waiting["approvers"]) == \
        ("pending", {"kind": "tool.call", "name": "payments.refund"}, ["finance"])
    assert "arguments" not in waiting  # the status says where it stands, never what was asked
    # Asked again while it waits: the same pending approval, not a new one.
    assert call(stack, refund(250, order))[1]["approval_id"] == approval_id
    assert call(stack, refund(40, order))[0] == 200  # within the limit: no approval needed

    shown = json.loads(cli(stack, "approvals", "show", approval_id, "--format", "json").stdout)
    assert (shown["status"], shown["subject"], shown["name"], shown["approvers"]) == \
        ("pending", "sam", "payments.refund", ["finance"])
    assert shown["arguments"] == {"amount_usd": 250, "order": order, "tenant_id": "acme"}
    listed = json.loads(cli(stack, "approvals", "list", "--format", "json").stdout)
    assert approval_id in [a["id"] for a in listed]

    own = cli(stack, "approvals", "approve", approval_id, "--token", stack.keys.token("sam", ["finance"], "acme"))
    assert own.returncode == 1
    assert "own request" in own.stderr
    no_role = cli(stack, "approvals", "approve", approval_id, "--token", stack.keys.token("fay", ["support"], "acme"))
    assert no_role.returncode == 1
    assert "finance" in no_role.stderr
    forged = cli(stack, "approvals", "approve", approval_id, "--token", "not-a-jwt")
    assert forged.returncode == 1
    assert "not authenticated" in forged.stderr
    approved = cli(stack, "approvals", "approve", approval_id, "--token",
                   stack.keys.token("fiona", ["finance"], "acme"))
    assert approved.returncode == 0, approved.stderr
    assert "approved by fiona" in approved.stdout
    again = cli(stack, "approvals", "deny", approval_id, "--token", stack.keys.token("fiona", ["finance"], "acme"))
    assert again.returncode == 1  # final
    assert "approved: decisions are final" in again.stderr
    assert (status_of(stack, answer["status_url"])["status"], status_of(stack, answer["status_url"])["uses_left"]) \
        == ("approved", 1)

    # One argument changed: another call, its own approval.
    changed = call(stack, refund(251, order))
    assert changed[1]["reasons"] == ["approval_required"]
    assert changed[1]["approval_id"] != approval_id
    # The approved call (its keys reordered): passes once, its one use.
    assert call(stack, refund(250, order, spaced=True))[0] == 200
    spent = call(stack, refund(250, order))
    assert spent[1]["reasons"] == ["approval_required"]
    assert spent[1]["approval_id"] != approval_id
    assert status_of(stack, answer["status_url"])["status"] == "used"
    # Someone else making the same call is not covered by sam's approval.
    assert call(stack, refund(250, order), who="sue")[1]["reasons"] == ["approval_required"]

    story = cli(stack, "audit", "query", "--approval", approval_id)
    events = [(r["approval"]["event"], r["allow"]) for r in map(json.loads, story.stdout.splitlines())]
    assert events[0] == ("requested", False)
    assert ("pending", False) in events
    assert ("refused", False) in events  # the self-approval attempt is evidence too
    assert ("approved", True) in events
    assert events[-1] == ("used", True)
    verified = subprocess.run([AGENTGOV, "audit", "verify", str(stack.workdir / "audit")], capture_output=True,
                              text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.envoy
def test_the_status_url_answers_only_for_real_approvals(stack: LocalStack) -> None:
    base = f"http://127.0.0.1:{stack.agentgov_http_ports[0]}/approvals/v1/"
    for missing in ("apr_" + "0" * 24, "../../etc/passwd", "apr_XYZ", ""):
        assert request(base + missing, "GET")[0] == 404
    assert request(base + "apr_" + "0" * 24, "POST", {})[0] == 405


@pytest.mark.envoy
def test_a_denied_call_stays_refused(stack: LocalStack) -> None:
    status, answer = call(stack, refund(999, f"D-{stack.engine}"))
    assert status == 403
    denied = cli(stack, "approvals", "deny", answer["approval_id"], "--token",
                 stack.keys.token("fiona", ["finance"], "acme"))
    assert denied.returncode == 0, denied.stderr
    after = call(stack, refund(999, f"D-{stack.engine}"))
    assert after[1]["reasons"] == ["approval_required"]
    assert after[1]["approval_id"] != answer["approval_id"]  # a denial is final: asking again is a new request
    assert status_of(stack, answer["status_url"])["status"] == "denied"


@pytest.mark.envoy
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_two_concurrent_uses_of_a_single_use_approval_one_passes(store: str, tmp_path: Path) -> None:
    redis = RedisServer() if store == "redis" else None
    if redis is not None:
        redis.start()
    extra = {"approvals": {"store": redis.url if redis else "sqlite"}}
    try:
        with LocalStack(policies=POLICIES, workers=2, config_extra=extra, workdir=tmp_path / "stack") as running:
            running.keep_workdir = True
            _, answer = call(running, refund(500, "C-1"))
            done = cli(running, "approvals", "approve", answer["approval_id"], "--token",
                       running.keys.token("fiona", ["finance"], "acme"))
            assert done.returncode == 0, done.stderr
            with ThreadPoolExecutor(12) as pool:
                statuses = list(pool.map(lambda _: call(running, refund(500, "C-1"))[0], range(12)))
    finally:
        if redis is not None:
            redis.stop()
    assert statuses.count(200) == 1
    assert statuses.count(403) == 11


@pytest.mark.envoy
def test_a_request_nobody_answers_expires(tmp_path: Path) -> None:
    extra = {"approvals": {"store": "sqlite", "pending_ttl_s": 1}}
    with LocalStack(policies=POLICIES, config_extra=extra, workdir=tmp_path / "stack") as running:
        running.keep_workdir = True
        first = call(running, refund(300, "E-1"))[1]["approval_id"]
        assert wait_for(lambda: call(running, refund(300, "E-1"))[1]["approval_id"] != first, 10)
        late = cli(running, "approvals", "approve", first, "--token", running.keys.token("fiona", ["finance"], "acme"))
        assert late.returncode == 1
        assert "expired" in late.stderr
        shown = json.loads(cli(running, "approvals", "show", first, "--format", "json").stdout)
        assert shown["status"] == "expired"
        assert status_of(running, f"http://127.0.0.1:{running.agentgov_http_ports[0]}/approvals/v1/{first}")[
            "status"] == "expired"


@pytest.mark.envoy
def test_without_an_approvals_store_a_call_that_needs_one_is_refused() -> None:
    with LocalStack(policies=POLICIES) as running:
        status, answer = call(running, refund(300, "N-1"))
    assert (status, answer["reasons"]) == (403, ["approval_unavailable"])


# --- units -------------------------------------------------------------------------------------

def test_the_argument_hash_ignores_spelling_and_sees_every_value() -> None:
    base = {"a": 1, "b": {"c": [1, 2.5, "x"]}}
    assert argument_hash(base) == argument_hash({"b": {"c": [1.0, 2.5, "x"]}, "a": 1e0})
    assert argument_hash(json.loads('{ "b" : {"c":[1,2.50,"x"]}, "a":1 }')) == argument_hash(base)
    for changed in ({"a": 2, "b": base["b"]}, {"a": 1, "b": {"c": [1, 2.5, "y"]}}, {"a": 1},
                    {"a": "1", "b": base["b"]}, {"a": True, "b": base["b"]}):
        assert argument_hash(changed) != argument_hash(base)
    assert canonical_arguments({"z": 1, "a": "é"}) == '{"a":"é","z":1}'


def test_an_approval_obligation_is_read_strictly() -> None:
    assert read_approval({"approvers": ["finance"]}) == ApprovalSpec(("finance",))
    for bad in ({"approvers": []}, {"approvers": "finance"}, {"approvers": ["x"], "uses": 0},
                {"approvers": ["x"], "ttl_s": -1}, {"approvers": ["x"], "extra": 1}, ["finance"]):
        assert isinstance(read_approval(bad), str)


def test_an_approval_expires_after_its_ttl_and_uses_are_final(tmp_path: Path) -> None:
    store = SqliteApprovalStore(tmp_path / "a.sqlite3")
    binding = Binding("sam", "acme", "tool.call", "payments.refund", argument_hash({"x": 1}), "rev")
    spec = ApprovalSpec(("finance",), ttl_s=10, uses=2)

    async def run() -> list[str]:
        out = []
        taken = await store.take(binding, "{}", spec, 60, "d1", now=1000)
        out.append(taken.outcome)
        await store.decide(taken.approval.id, True, "fiona", ["finance"], now=1001)
        out.append((await store.take(binding, "{}", spec, 60, "d2", now=1002)).outcome)
        late = await store.take(binding, "{}", spec, 60, "d3", now=1012)  # its second use, after the TTL
        out.append(late.outcome)
        out.append("expired" if ",".join(late.expired) == taken.approval.id else "kept")
        with pytest.raises(ApprovalRefused, match="final"):
            await store.decide(taken.approval.id, True, "fiona", ["finance"], now=1013)
        await store.close()
        return out

    assert asyncio.run(run()) == ["requested", "used", "requested", "expired"]


def test_approvals_settings_are_read_strictly() -> None:
    assert settings_from_config({}).status_url_for("apr_1") == "/approvals/v1/apr_1"
    assert settings_from_config({"status_url": "https://gw.example.com/a/{id}?x=1"}).status_url_for("apr_1") == \
        "https://gw.example.com/a/apr_1?x=1"
    for bad in ({"status_url": "https://gw.example.com/a"}, {"status_url": "ftp://x/{id}"},
                {"status_url": "/a/{id}/{id}"}, {"status_url": "/a b/{id}"}, {"status_url": 1},
                {"store": "mysql://x"}, {"wait_s": 61}, {"default_ttl_s": 0}, {"bind_revision": "yes"},
                {"unknown": 1}):
        with pytest.raises(ApprovalsConfigError):
            settings_from_config(bad)


@pytest.mark.parametrize("rpc_id", [7, "req-7", None])
def test_a_waiting_refusal_keeps_its_shape_through_the_decision_service(rpc_id: str | int | None) -> None:
    """The decision service carries the approval id, status URL and JSON-RPC id to a remote ext_authz,
    which answers the caller exactly as a local one would."""
    note = ApprovalNote("apr_" + "a" * 24, "requested", status_url="https://gw/approvals/v1/x", jsonrpc=True,
                        rpc_id=rpc_id)
    decision = replace(Decision.failed(Failure.FORBIDDEN, "approval_required", detail="waiting"), approval=note)
    verdict = Verdict(decision, Subject("sam"), "d1")
    remote = verdict_from_response(response_from_verdict(verdict, include_input=False))
    assert remote.decision.approval is not None
    assert (remote.decision.approval.fields(), remote.decision.approval.rpc_id) == (note.fields(), rpc_id)
    for answered in (verdict, remote):
        body = json.loads(denied(answered).body)
        assert (body["jsonrpc"], body["id"], body["error"]["code"]) == ("2.0", rpc_id, -32010)
        assert body["error"]["data"] == {"error": "forbidden", "reasons": ["approval_required"], "decision_id": "d1",
                                         "detail": "waiting", "approval_id": note.id, "status_url": note.status_url}
    plain = replace(decision, approval=replace(note, jsonrpc=False, rpc_id=None))
    assert json.loads(denied(replace(verdict, decision=plain)).body)["approval_id"] == note.id


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_an_expiry_is_marked_once_whoever_sweeps(kind: str, tmp_path: Path) -> None:
    """Two sweepers (two workers) find the same approval due: one marks it and records it."""
    redis = RedisServer() if kind == "redis" else None
    if redis is not None:
        redis.start()
    try:
        from agentgov.engine.approvals.stores import open_store
        from agentgov.engine.pipeline.approvals import ApprovalStage

        store_url = redis.url if redis else "sqlite"
        recorded: list[tuple[str, str]] = []

        async def recorder(approval: Any, event: str, detail: str) -> None:
            recorded.append((approval.id, event))

        async def run() -> tuple[list[str], list[str], str]:
            settings = settings_from_config({"store": store_url})
            one = ApprovalStage(settings, open_store(store_url, tmp_path), recorder=recorder)
            two = ApprovalStage(settings, open_store(store_url, tmp_path), recorder=recorder)
            assert one.store is not None
            binding = Binding("sam", "acme", "tool.call", "payments.refund", argument_hash({"x": 1}), "rev")
            taken = await one.store.take(binding, "{}", ApprovalSpec(("finance",)), 10, "d1", now=1000)
            early = await one.sweep(1005)
            swept = await asyncio.gather(one.sweep(1011), two.sweep(1011))
            status = (await one.store.get(taken.approval.id))
            await one.close()
            await two.close()
            assert status is not None
            return early, [i for ids in swept for i in ids], status.status

        early, swept, status = asyncio.run(run())
    finally:
        if redis is not None:
            redis.stop()
    assert early == []
    assert len(swept) == 1
    assert status == "expired"
    assert recorded == [(swept[0], "expired")]


@pytest.mark.envoy
def test_an_approval_nobody_asks_about_again_still_leaves_its_expiry_in_the_audit_log(tmp_path: Path) -> None:
    extra = {"approvals": {"store": "sqlite", "pending_ttl_s": 1, "sweep_s": 0.2}, "audit": {"dir": "audit"}}
    with LocalStack(policies=POLICIES, config_extra=extra, workdir=tmp_path / "stack") as running:
        running.keep_workdir = True
        approval_id = call(running, refund(300, "X-1"))[1]["approval_id"]

        def events() -> list[str]:
            story = cli(running, "audit", "query", "--approval", approval_id)
            return [r["approval"]["event"] for r in map(json.loads, story.stdout.splitlines())]

        assert wait_for(lambda: "expired" in events(), 15), events()
    assert events()[0] == "requested"


def test_the_redis_index_forgets_approvals_whose_records_expired(tmp_path: Path) -> None:
    """A call's approvals are kept KEEP_S after their last change; once Redis has dropped them, the
    id index drops its entries too (it would otherwise grow for ever)."""
    from agentgov.engine.approvals.redis_store import PREFIX, RedisApprovalStore

    redis = RedisServer()
    redis.start()
    try:
        async def run() -> tuple[list[str], int]:
            store = RedisApprovalStore(redis.url)
            spec = ApprovalSpec(("finance",))
            kept = await store.take(Binding("sam", "acme", "tool.call", "a", argument_hash({}), "r"), "{}", spec,
                                    60, "d1", now=1000)
            dropped = await store.take(Binding("sam", "acme", "tool.call", "b", argument_hash({}), "r"), "{}", spec,
                                       60, "d2", now=1000)
            client = store._client()
            await client.delete(PREFIX + "b:" + dropped.approval.binding)  # as its KEEP_S expiry would
            listed = [a.id for a in await store.list()]
            left = await client.hlen(PREFIX + "ids")
            await store.close()
            assert listed == [kept.approval.id]
            return listed, left

        _, left = asyncio.run(run())
    finally:
        redis.stop()
    assert left == 1
