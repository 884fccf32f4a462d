"""The hook contract: configured order, enrichment that reaches the policy, failure modes and
timeouts, load errors that name the plugin, and after hooks that see every decision. Third-party
hooks come from a real package (tests/plugins/agentgov-example-hooks) installed with pip and found
through the `agentgov.hooks` entry point; the end-to-end test runs them behind the real Envoy."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from agentgov.cli.stack import LocalStack
from agentgov.engine.config import ConfigError, build_governor, load_config
from agentgov.engine.hooks.base import interface_problems
from agentgov.engine.hooks.pii.hook import PiiHook
from agentgov.engine.pipeline import Envelope, Governor, Verdict
from tests.conftest import REPO
from tests.http_helpers import CALL, bearer, send

PLUGIN_SOURCE = REPO / "tests" / "plugins" / "agentgov-example-hooks"
TIER_POLICY = """package agentgov

import rego.v1

default decision := {"allow": false, "reasons": ["tier_required"], "status": 403}

decision := {"allow": true, "reasons": ["gold_tier"], "status": 200, "obligations": {"redact": [], "headers": {}}} if {
	input.subject.authenticated
	input.hooks.tenant_tier.tier == "gold"
	input.hooks.tier_echo.saw == "gold"
}
"""


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example hook package, installed as a user would (pip), into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PLUGIN_SOURCE)], check=True, capture_output=True)
    return target


@pytest.fixture
def plugins(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(plugin_dir))
    return plugin_dir


def tier_policy(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    (folder / "rego").mkdir(parents=True)
    (folder / "rego" / "tier.rego").write_text(TIER_POLICY)
    return folder


def governor(tmp_path: Path, hooks: list[dict[str, Any]], identity: bool = False, **extra: Any) -> Governor:
    folder = tier_policy(tmp_path)
    doc = {"policy": {"paths": [str(folder)]}, "identity": {"required": False}, "hooks": hooks, **extra}
    path = tmp_path / "agentgov.yaml"
    path.write_text(json.dumps(doc))
    return build_governor(load_config(path))


def stated(tenant: str = "acme") -> dict[str, Any]:
    return {"subject": {"id": "alice", "roles": ["analyst"], "tenant": tenant, "authenticated": True},
            "action": {"kind": "tool.call", "name": "crm.query"}, "resource": {"type": "tool", "id": "crm.query"},
            "arguments": {}}


def decide(gov: Governor, doc: dict[str, Any]) -> Verdict:
    return asyncio.run(gov.decide_stated(doc))


TIERS = {"name": "tenant_tier", "options": {"tiers": {"acme": "gold", "globex": "silver"}}}


def test_enrichment_reaches_the_policy_in_the_configured_order(tmp_path: Path, plugins: Path) -> None:
    gov = governor(tmp_path, [TIERS, {"name": "tier_echo"}])
    verdict = decide(gov, stated())
    assert (verdict.decision.allow, verdict.decision.reasons) == (True, ("gold_tier",))
    assert verdict.inputs[0]["hooks"] == {"tenant_tier": {"tier": "gold"}, "tier_echo": {"saw": "gold"}}
    # Built-ins not named in `hooks:` run first; then the listed ones, in the listed order.
    assert [r.name for r in verdict.hooks if r.phase == "before"] == ["pii", "tenant_tier", "tier_echo"]
    assert decide(gov, stated("globex")).decision.reasons == ("tier_required",)


def test_reversed_order_is_honoured(tmp_path: Path, plugins: Path) -> None:
    gov = governor(tmp_path, [{"name": "tier_echo"}, TIERS, {"name": "pii"}])
    verdict = decide(gov, stated())
    assert verdict.inputs[0]["hooks"]["tier_echo"] == {"saw": "unseen"}  # ran before tenant_tier
    assert [r.name for r in verdict.hooks] == ["tier_echo", "tenant_tier", "pii"]
    assert not verdict.decision.allow


def _failures(hook: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("agentgov_hook_failures_total",
                                     {"hook": hook, "phase": "before", "outcome": outcome}) or 0.0


def test_a_hook_that_raises_denies_with_503_by_default(tmp_path: Path, plugins: Path) -> None:
    gov = governor(tmp_path, [TIERS, {"name": "tier_echo"}, {"name": "flaky"}])
    before = _failures("flaky", "denied")
    verdict = decide(gov, stated())
    assert (verdict.decision.allow, verdict.decision.status, verdict.decision.reasons) == (False, 503, ("hook_error",))
    assert verdict.decision.errors == ("hook flaky before: RuntimeError",)  # never the exception's text
    assert [(r.name, r.outcome) for r in verdict.hooks][-1] == ("flaky", "error")
    assert _failures("flaky", "denied") == before + 1


def test_failure_mode_allow_lets_the_decision_go_on_and_counts_it(tmp_path: Path, plugins: Path) -> None:
    gov = governor(tmp_path, [TIERS, {"name": "tier_echo"}, {"name": "flaky", "failure_mode": "allow"}])
    before = _failures("flaky", "allowed")
    verdict = decide(gov, stated())
    assert verdict.decision.allow
    assert _failures("flaky", "allowed") == before + 1


def test_a_hook_that_times_out_follows_its_failure_mode(tmp_path: Path, plugins: Path) -> None:
    gov = governor(tmp_path, [TIERS, {"name": "slow", "timeout_s": 0.05, "options": {"seconds": 5}}])
    verdict = decide(gov, stated())
    assert (verdict.decision.status, verdict.decision.reasons) == (503, ("hook_error",))
    assert verdict.hooks[-1].outcome == "timeout"
    assert verdict.hooks[-1].seconds < 1


def test_after_hooks_see_every_decision_including_early_denies(tmp_path: Path, plugins: Path) -> None:
    log = tmp_path / "seen.jsonl"
    gov = governor(tmp_path, [TIERS, {"name": "tier_echo"}, {"name": "recorder", "options": {"path": str(log)}}])
    decide(gov, stated())
    asyncio.run(gov.decide(Envelope("POST", "/mcp", "crm", {}, b'{"jsonrpc": "2.0", "method": ')))
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["entry_point"], x["allow"], x["reasons"]) for x in lines] == [
        ("data_api", True, ["gold_tier"]), ("ext_authz", False, ["malformed_request"])]


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "broken"}, "hook 'broken' (agentgov-example-hooks 0.1.0, agentgov_example_hooks:Broken) does not "
                         "satisfy the hook interface: `failure_mode` must be 'deny' or 'allow'; declares phase "
                         "'before' but has no before() method"),
    ({"name": "misnamed"}, "made a hook that calls itself 'not_misnamed'"),
    ({"name": "nope"}, "no hook named 'nope' is installed (entry-point group agentgov.hooks; installed: "),
    ({"name": "tenant_tier", "failure_mode": "maybe"}, "failure_mode must be deny or allow"),
    ({"name": "tenant_tier", "timeout_s": 0}, "timeout_s must be a positive number"),
    ({"name": "tenant_tier", "colour": "red"}, "unknown key(s) colour"),
    ({"name": "pii", "options": {"x": 1}}, "the built-in hook 'pii' is configured in its own section"),
])
def test_a_hook_that_cannot_be_used_is_a_load_error_naming_it(tmp_path: Path, plugins: Path, entry: dict[str, Any],
                                                              message: str) -> None:
    with pytest.raises(ConfigError) as err:
        governor(tmp_path, [TIERS, entry] if entry["name"] != "tenant_tier" else [entry])
    assert message in str(err.value)


def test_listing_a_hook_twice_is_an_error(tmp_path: Path, plugins: Path) -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        governor(tmp_path, [TIERS, TIERS])


def test_builtin_hooks_satisfy_the_interface() -> None:
    assert interface_problems(PiiHook()) == []


def test_serve_refuses_a_broken_plugin_with_one_line(tmp_path: Path, plugin_dir: Path) -> None:
    folder = tier_policy(tmp_path)
    config = tmp_path / "agentgov.yaml"
    config.write_text(json.dumps({"policy": {"paths": [str(folder)]}, "identity": {"required": False},
                                  "hooks": [{"name": "broken"}]}))
    proc = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(plugin_dir),
                                                                           "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "hooks[0]: hook 'broken' (agentgov-example-hooks 0.1.0" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def tier_stack(tmp_path_factory: pytest.TempPathFactory, plugin_dir: Path) -> Iterator[LocalStack]:
    folder = tier_policy(tmp_path_factory.mktemp("tier"))
    stack = LocalStack(policies=folder, config_extra={"hooks": [TIERS, {"name": "tier_echo"}]},
                       env_extra={"PYTHONPATH": str(plugin_dir)})
    with stack:
        yield stack


@pytest.mark.envoy
def test_a_third_party_hook_decides_through_envoy(tier_stack: LocalStack) -> None:
    gold = send(tier_stack, "/mcp", CALL, bearer(tier_stack.keys.token("alice", ["analyst"], "acme")))
    assert gold[0] == 200
    silver = send(tier_stack, "/mcp", CALL, bearer(tier_stack.keys.token("bob", ["analyst"], "globex")))
    assert (silver[0], silver[2]["reasons"]) == (403, ["tier_required"])


def test_hook_request_evolve_is_dataclasses_replace() -> None:
    """The runner's fast copy must stay what replace() gives, field for field."""
    import dataclasses

    from agentgov.engine.hooks.base import HookRequest
    from agentgov.engine.model import ANONYMOUS, Subject

    base = HookRequest("d", "ext_authz", "POST", "/mcp", "h", {"a": "b"}, ANONYMOUS, (), body=b"x")
    changes = {"subject": Subject("alice", ("analyst",), "acme"), "timings": {"parse": 0.1}, "phase": "response"}
    evolved, replaced = base.evolve(**changes), dataclasses.replace(base, **changes)
    assert evolved == replaced
    assert dataclasses.asdict(evolved) == dataclasses.asdict(replaced)
    assert base.subject is ANONYMOUS  # the original is untouched
    assert not hasattr(HookRequest, "__slots__")
    assert not hasattr(HookRequest, "__post_init__")
    with pytest.raises(TypeError, match="no field"):
        base.evolve(subjet=ANONYMOUS)
