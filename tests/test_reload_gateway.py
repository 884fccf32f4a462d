"""Hot reload and shadow mode through the real Envoy on live traffic: 20 bundle swaps under
continuous load with no failed or wrongly decided check; a candidate in shadow reports exactly the
flips it introduces and enforces nothing; `serve` hands the active bundle to OPA agents."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from agentgov.cli.stack import LocalStack
from agentgov.engine.bundles.bundle import build_bundle
from tests.bundle_servers import TOKEN, BundleServer
from tests.conftest import POLICIES, revoke_analyst_crm
from tests.http_helpers import CALL, bearer, request, send
from tests.support import records, wait_for

pytestmark = pytest.mark.envoy
PATH = "/bundles/agentgov.tar.gz"
SWAPS = 20


@pytest.fixture(scope="module")
def revoked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library with analysts' crm.query grant removed."""
    target = tmp_path_factory.mktemp("revoked") / "policies"
    shutil.copytree(POLICIES, target)
    return revoke_analyst_crm(target)


@pytest.fixture
def server() -> Iterator[BundleServer]:
    with BundleServer() as running:
        yield running


def _stack(base: Path, **policy: Any) -> LocalStack:
    return LocalStack(policies=POLICIES, workers=2, data_api=True, policy_extra=policy,
                      server_extra={"serve_bundles": True}, env_extra={"AGENTGOV_TEST_BUNDLE_TOKEN": TOKEN},
                      config_extra={"audit": {"dir": str(base / "audit")}})


@pytest.mark.reliability
def test_twenty_swaps_under_load_decide_every_check_by_the_revision_that_answered(
        server: BundleServer, revoked: Path, tmp_path: Path) -> None:
    blobs = {"A": build_bundle([POLICIES], revision="A"), "B": build_bundle([revoked], revision="B")}
    server.store[PATH] = blobs["A"]
    bundle = {"source": server.url + PATH, "token_env": "AGENTGOV_TEST_BUNDLE_TOKEN", "poll_min_s": 0.05,
              "poll_max_s": 0.15, "persist_dir": str(tmp_path / "cache")}
    results: list[tuple[int, dict[str, str]]] = []
    with _stack(tmp_path, bundle=bundle) as stack:
        alice = bearer(stack.keys.token("alice", ["analyst"], "acme"))
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                status, headers, _ = send(stack, "/mcp", CALL, alice)
                results.append((status, headers))

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(SWAPS):
            server.store[PATH] = blobs["B" if i % 2 == 0 else "A"]
            answer = 403 if i % 2 == 0 else 200  # B denies, A allows
            # Both workers have it once the last answers (round robin over both) all say so.
            assert wait_for(lambda a=answer: [s for s, _ in results[-8:]] == [a] * 8, 15)
        stop.set()
        for t in threads:
            t.join(15)
        # The Data API serves what is active now to OPA agents, with its digest as ETag.
        url = f"http://127.0.0.1:{stack.data_api_port}/bundles/agentgov"
        status, headers, body = request(url, "GET")
        assert (status, body) == (200, blobs["A"])
        assert request(url, "GET", headers={"If-None-Match": headers["etag"]})[0] == 304
    # Every answer is the one its revision gives: A lets alice query the CRM, B does not.
    answered: dict[str, int] = {}
    for status, headers in results:
        revision = _revision(status, headers)
        assert revision.split("@")[0] in ("A", "B"), (status, headers)
        assert status == (200 if revision.startswith("A@") else 403), (status, revision)
        answered[revision] = answered.get(revision, 0) + 1
    assert len(results) > 200
    assert len(answered) == 2
    # Each worker swapped at least 20 times while answering (its audit chain, in order, shows it).
    chains: dict[str, list[dict[str, Any]]] = {}
    for record in records(tmp_path / "audit"):
        chains.setdefault(record["chain"], []).append(record)
    assert len(chains) == 2
    for chain in chains.values():
        revisions = [r["policy"]["revision"] for r in sorted(chain, key=lambda r: r["seq"])]
        changes = sum(1 for a, b in itertools.pairwise(revisions) if a != b)
        assert changes >= SWAPS - 2, changes  # a worker may take two swaps in one poll gap, rarely


def _revision(status: int, headers: dict[str, str]) -> str:
    if status == 200:  # the backend saw it with the allow
        return str(json.loads(headers["x-demo-seen"])["x-agentgov-policy-revision"])
    return headers.get("x-agentgov-policy-revision", f"<none: {status}>")


def test_a_shadow_candidate_reports_exactly_its_flips_on_live_traffic_and_enforces_nothing(
        revoked: Path, tmp_path: Path, run_cli: Any) -> None:
    candidate = tmp_path / "candidate.tar.gz"
    candidate.write_bytes(build_bundle([revoked], revision="candidate"))
    shadow = {"source": str(candidate), "poll_min_s": 0.5, "poll_max_s": 1.0, "persist_dir": ""}
    with _stack(tmp_path, shadow=shadow) as stack:
        callers = {"alice": ("analyst", 200), "sam": ("support", 200), "dev1": ("developer", 403)}
        for name, (role, expected) in callers.items():
            headers = bearer(stack.keys.token(name, [role], "acme"))
            for _ in range(5):
                assert send(stack, "/mcp", CALL, headers)[0] == expected, name  # the active policy answers
        assert wait_for(lambda: len(_shadow_records(tmp_path)) >= 5, 10)
        time.sleep(0.5)
        log = stack.log("agentgov")
    flips = _shadow_records(tmp_path)
    # Exactly alice's five calls flip (analysts lose crm.query); support keeps it; developers never had it.
    assert sorted(r["subject"]["id"] for r in flips) == ["alice"] * 5
    assert all(r["allow"] and not r["shadow"]["allow"] and r["shadow"]["flips"] == ["allow_to_deny"] for r in flips)
    assert all(r["shadow"]["revision"].startswith("candidate@sha256:") for r in flips)
    assert "Traceback" not in log
    result: Result = run_cli("shadow", "report", str(tmp_path / "audit"), "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["flips"] == 5
    assert report["by_kind"] == {"allow_to_deny": 5}
    assert [(g["action"], g["count"], g["subjects"]) for g in report["groups"]] == [("tool.call crm.query", 5, 1)]
    assert run_cli("shadow", "report", str(tmp_path / "audit"), "--fail-on-flips").exit_code == 2
    pretty = run_cli("shadow", "report", str(tmp_path / "audit")).output
    assert "5 flip(s)" in pretty
    assert "tool.call crm.query: allow 200 tool_granted -> deny 403 default_deny" in pretty
    # Shadow records are not decisions: the decision queries and exports leave them out.
    queried = run_cli("audit", "query", str(tmp_path / "audit")).output.splitlines()
    assert all(json.loads(line)["phase"] != "shadow" for line in queried)
    assert len(queried) == 15


def _shadow_records(base: Path) -> list[dict[str, Any]]:
    return [r for r in records(base / "audit") if r.get("phase") == "shadow"] if (base / "audit").exists() else []
