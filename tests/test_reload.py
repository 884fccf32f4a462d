"""Hot reload: `serve` loads its policies from a bundle source (an HTTP bundle server, an OCI
registry, a file or a folder), polls it, verifies signatures, swaps whole policy sets, keeps the last
good one when a new one is bad, and starts from a persisted copy when the source is down.

In process here (the Governor and its reloader, real servers on loopback); through the real Envoy
under load in test_reload_gateway.py."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY

from agentgov.cli.stack import free_port
from agentgov.engine.bundles import oci
from agentgov.engine.bundles.archive import read_archive, write_archive
from agentgov.engine.bundles.bundle import build_bundle, open_bundle, sign_bundle
from agentgov.engine.bundles.reloader import BundleReloader
from agentgov.engine.bundles.settings import ReloadSettings
from agentgov.engine.bundles.sources import LocalSource
from agentgov.engine.config import ConfigError, build_governor, load_config
from agentgov.engine.hooks.base import Enrichment, HookRequest
from agentgov.engine.hooks.registry import bind
from agentgov.engine.model import Decision
from agentgov.engine.pipeline import Governor
from agentgov.engine.policy.policy_set import PolicySet, UnavailableBackend, policy_set_builder, reload_builder
from agentgov.engine.server.data_api import create_app
from tests.bundle_servers import TOKEN, BundleServer, Registry
from tests.conftest import POLICIES, revoke_analyst_crm
from tests.support import until

PATH = "/bundles/agentgov.tar.gz"
ALICE = {"subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
         "action": {"kind": "tool.call", "name": "crm.query"}, "resource": {"type": "tool", "id": "crm.query"},
         "arguments": {"tenant_id": "acme", "query": "deals"}}


@pytest.fixture(autouse=True)
def _collect_engines() -> Iterator[None]:
    """A Governor and its reloader refer to each other: collect them here, on the main thread.
    regorus engines must be dropped on the thread that made them, and a later collection could run
    on a load-generator thread of another test."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A: the library (alice may query the CRM); B: one grant removed (she may not)."""
    revoked = tmp_path_factory.mktemp("revoked") / "policies"
    shutil.copytree(POLICIES, revoked)
    revoke_analyst_crm(revoked)
    return {"A": build_bundle([POLICIES], revision="A"), "B": build_bundle([revoked], revision="B")}


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, bytes]:
    out = {}
    for name in ("good", "other"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        out[name] = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        out[f"{name}.pub"] = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return out


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[BundleServer]:
    monkeypatch.setenv("AGENTGOV_TEST_BUNDLE_TOKEN", TOKEN)
    with BundleServer() as running:
        yield running


def write_config(base: Path, source: str, *, verification: dict[str, Any] | None = None,
                 persist_dir: str = "cache", extra: dict[str, Any] | None = None,
                 shadow: str | None = None, engine: str = "rego") -> Path:
    bundle: dict[str, Any] = {"source": source, "poll_min_s": 0.05, "poll_max_s": 0.1, "persist_dir": persist_dir}
    if source.startswith("http"):
        bundle["token_env"] = "AGENTGOV_TEST_BUNDLE_TOKEN"
    if verification:
        bundle["verification"] = verification
    policy: dict[str, Any] = {"engine": engine, "bundle": bundle}
    if shadow:
        policy["shadow"] = {"source": shadow, "poll_min_s": 0.05, "poll_max_s": 0.1, "persist_dir": ""}
    doc = {"policy": policy, "identity": {"required": False}, **(extra or {})}
    path = base / "agentgov.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


async def decide(governor: Governor) -> tuple[bool, int, str]:
    verdict = await governor.decide_stated(ALICE)
    return verdict.decision.allow, verdict.decision.status, verdict.policy_revision


def revision_of(governor: Governor) -> str:
    return governor.policy.revision


def _start_and_stop(config: Path) -> str:
    """Start a Governor from `config` (its reloader loads and persists the bundle) and stop it;
    the revision it served."""
    async def once() -> str:
        governor = build_governor(load_config(config))
        await governor.start()
        revision = revision_of(governor)
        await governor.close()
        return revision

    result: str = run(once)
    return result


# --- the policy set swaps whole; checks in flight finish on theirs ---------------------------------

class Gate:
    """A before hook that holds every request until released: a check kept in flight."""

    name = "gate"
    phases = frozenset({"before"})
    failure_mode = "deny"
    timeout_s = None

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def before(self, request: HookRequest) -> Enrichment | None:
        self.entered.set()
        await self.release.wait()
        return None


def test_a_check_in_flight_finishes_on_the_set_it_started_with(bundles: dict[str, bytes], tmp_path: Path) -> None:
    (tmp_path / "a.tar.gz").write_bytes(bundles["A"])
    (tmp_path / "b.tar.gz").write_bytes(bundles["B"])

    async def body() -> None:
        build = policy_set_builder("rego")
        sets = {}
        for name in ("a", "b"):
            loaded = open_bundle((tmp_path / f"{name}.tar.gz").read_bytes(), name)
            assert loaded.manifest is not None
            sets[name] = build(loaded.sources, loaded.manifest.revision, loaded.digest, None, name)
        gate = Gate()
        governor = Governor(sets["a"], None, hooks=[bind(gate, "deny", None)])
        in_flight = asyncio.create_task(governor.decide_stated(ALICE))
        await gate.entered.wait()
        governor.swap(sets["b"])
        gate.release.set()
        verdict = await in_flight
        assert (verdict.decision.allow, verdict.policy_revision) == (True, sets["a"].label)
        assert sets["a"].label.startswith("A@sha256:")
        assert len(sets["a"].label) == len("A@sha256:") + 12
        after = await governor.decide_stated(ALICE)
        assert (after.decision.allow, after.decision.reasons, after.policy_revision) == \
            (False, ("default_deny",), sets["b"].label)

    run(body)


# --- sources: HTTP, OCI, a file, a folder ----------------------------------------------------------

def test_an_http_source_is_polled_with_etags_and_a_new_bundle_is_picked_up(
        server: BundleServer, bundles: dict[str, bytes], tmp_path: Path) -> None:
    server.store[PATH] = bundles["A"]
    governor = build_governor(load_config(write_config(tmp_path, server.url + PATH)))

    async def body() -> None:
        assert (await decide(governor))[:2] == (False, 503)  # nothing loaded before start
        await governor.start()
        assert revision_of(governor) == "A"
        assert (await decide(governor))[0] is True
        # A few polls of an unchanged bundle: each one conditional.
        assert await until(lambda: len([h for m, _, h in server.requests if m == "GET" and h.get("If-None-Match")]) >= 2)
        server.store[PATH] = bundles["B"]
        assert await until(lambda: revision_of(governor) == "B")
        allow, status, label = await decide(governor)
        assert (allow, status) == (False, 403)
        assert label.startswith("B@sha256:")
        status = governor.service_status()["active"]
        assert status["active"]
        assert status["active_revision"] == "B"
        assert status["last_error"] == ""
        await governor.close()

    run(body)
    downloads = [p for m, p, h in server.requests if m == "GET" and not h.get("If-None-Match")]
    assert len(downloads) == 1  # later polls were conditional: a 304 costs no download


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def test_an_oci_source_reloads_when_the_tag_moves(registry: Registry, bundles: dict[str, bytes],
                                                   tmp_path: Path) -> None:
    ref = f"oci://127.0.0.1:{registry.port}/policies/reload:live"
    oci.push(ref, bundles["A"], insecure=True)
    config = write_config(tmp_path, ref)
    doc = yaml.safe_load(config.read_text())
    doc["policy"]["bundle"]["insecure"] = True
    config.write_text(yaml.safe_dump(doc))
    governor = build_governor(load_config(config))

    async def body() -> None:
        await governor.start()
        assert revision_of(governor) == "A"
        oci.push(ref, bundles["B"], insecure=True)
        assert await until(lambda: revision_of(governor) == "B", 20)
        assert (await decide(governor))[:2] == (False, 403)
        await governor.close()

    run(body)


@pytest.mark.parametrize("engine", ["rego", "cedar"])  # Cedar's sets are built on a worker thread
def test_a_folder_source_is_rebuilt_and_reloaded_when_a_file_changes(policies_copy: Path, tmp_path: Path,
                                                                      engine: str) -> None:
    governor = build_governor(load_config(write_config(tmp_path, str(policies_copy), engine=engine)))

    async def body() -> None:
        await governor.start()
        first = governor.revision
        assert (await decide(governor))[0] is True
        polled = governor.service_status()["active"]["last_poll_at"]
        assert await until(lambda: governor.service_status()["active"]["last_poll_at"] != polled)  # polled again
        assert governor.revision == first  # an unchanged folder is not reloaded
        revoke_analyst_crm(policies_copy)
        assert await until(lambda: governor.revision != first)
        assert (await decide(governor))[:2] == (False, 403)
        await governor.close()

    run(body)


# --- bad bundles are refused; the last good one keeps serving --------------------------------------

@pytest.mark.reliability
def test_corrupt_unsigned_and_badly_signed_bundles_are_refused_and_the_old_revision_keeps_serving(
        server: BundleServer, bundles: dict[str, bytes], signing_keys: dict[str, bytes], tmp_path: Path) -> None:
    (tmp_path / "bundle.pub.pem").write_bytes(signing_keys["good.pub"])
    verification = {"key_id": "release", "keys": {"release": {"key_file": "bundle.pub.pem", "algorithm": "RS256"}}}
    signed_a = sign_bundle(bundles["A"], signing_keys["good"], "RS256", key_id="release")
    server.store[PATH] = signed_a
    config = write_config(tmp_path, server.url + PATH, verification=verification, extra={"server": {}})
    governor = build_governor(load_config(config))
    app = create_app(governor, "data.agentgov.decision")
    health = next(r for r in app.router.routes() if r.resource is not None and r.resource.canonical == "/health")

    async def health_of() -> tuple[int, dict[str, Any]]:
        response = await health.handler(make_mocked_request("GET", "/health?bundles"))
        return response.status, json.loads(response.body)

    async def body() -> None:
        await governor.start()
        assert revision_of(governor) == "A"
        bad = {
            "corrupt": b"\x1f\x8b" + b"not a bundle" * 10,
            "unsigned": bundles["B"],
            "wrong key": sign_bundle(bundles["B"], signing_keys["other"], "RS256", key_id="release"),
            "one file changed": _tamper(sign_bundle(bundles["B"], signing_keys["good"], "RS256", key_id="release")),
        }
        for why, blob in bad.items():
            server.store[PATH] = signed_a  # back to good between the bad ones: each is refused anew
            assert await until(lambda: not _failing(governor)), why
            server.store[PATH] = blob
            assert await until(lambda: _failing(governor)), why
            assert revision_of(governor) == "A", why
            assert (await decide(governor))[0] is True, why
            status, doc = await health_of()
            assert status == 200, why
            assert doc["bundles"]["active"]["last_error"].startswith("refused"), (why, doc)
            assert doc["policy"]["revision"].startswith("A@sha256:")
        assert REGISTRY.get_sample_value("agentgov_bundle_failing", {"bundle": "active"}) == 1
        server.store[PATH] = sign_bundle(bundles["B"], signing_keys["good"], "RS256", key_id="release")
        assert await until(lambda: revision_of(governor) == "B")
        assert REGISTRY.get_sample_value("agentgov_bundle_failing", {"bundle": "active"}) == 0
        assert governor.service_status()["active"]["last_error"].startswith("refused")  # kept for the operator
        await governor.close()

    run(body)


def _failing(governor: Governor) -> bool:
    return bool(governor.service_status()["active"]["consecutive_failures"])


def _tamper(blob: bytes) -> bytes:
    """The same signed bundle with one data file changed after signing."""
    files = read_archive(blob)
    name = next(n for n in files if n.endswith("data.json"))
    files[name] = files[name].replace(b"analyst", b"analyse", 1)
    return write_archive(files)


# --- start-up with the source down -----------------------------------------------------------------

@pytest.mark.reliability
def test_with_the_source_down_at_start_up_the_persisted_last_good_bundle_serves(
        server: BundleServer, bundles: dict[str, bytes], tmp_path: Path) -> None:
    server.store[PATH] = bundles["A"]
    config = write_config(tmp_path, server.url + PATH)
    assert _start_and_stop(config) == "A"
    assert (tmp_path / "cache" / "active.tar.gz").read_bytes() == bundles["A"]
    server.stop()

    async def restart_while_down() -> None:
        governor = build_governor(load_config(config))
        await governor.start()
        status = governor.service_status()["active"]
        assert (status["active_revision"], status["active_from"]) == ("A", "persisted")
        assert status["last_error"].startswith("unreachable")
        assert (await decide(governor))[0] is True
        server.store[PATH] = bundles["B"]
        server.start()  # the source comes back with a new bundle: picked up by the next poll
        assert await until(lambda: revision_of(governor) == "B")
        await governor.close()

    run(restart_while_down)


@pytest.mark.reliability
def test_with_the_source_down_and_nothing_persisted_every_check_is_refused_until_it_comes_back(
        server: BundleServer, bundles: dict[str, bytes], tmp_path: Path) -> None:
    server.stop()
    governor = build_governor(load_config(write_config(tmp_path, server.url + PATH)))
    app = create_app(governor, "data.agentgov.decision")

    async def body() -> None:
        await governor.start()
        verdict = await governor.decide_stated(ALICE)
        assert (verdict.decision.allow, verdict.decision.status, verdict.decision.reasons) == \
            (False, 503, ("policy_unavailable",))
        assert not governor.policy.available
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/health?bundles")).status == 500
            assert (await client.get("/health")).status == 200
            server.store[PATH] = bundles["A"]
            server.start()
            assert await until(lambda: governor.policy.available)
            assert (await client.get("/health?bundles")).status == 200
        assert (await decide(governor))[0] is True
        await governor.close()

    run(body)


def test_a_persisted_copy_is_verified_again_and_one_from_another_source_is_not_used(
        server: BundleServer, bundles: dict[str, bytes], signing_keys: dict[str, bytes], tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "active.tar.gz").write_bytes(bundles["A"])  # unsigned
    (tmp_path / "bundle.pub.pem").write_bytes(signing_keys["good.pub"])
    server.stop()
    verification = {"keys": {"release": {"key_file": "bundle.pub.pem"}}}
    governor = build_governor(load_config(write_config(tmp_path, server.url + PATH, verification=verification)))

    async def body() -> None:
        await governor.start()
        assert not governor.policy.available  # the unsigned copy is refused now that keys are configured
        await governor.close()

    run(body)
    (tmp_path / "cache" / "active.json").write_text('{"source": "http://elsewhere/b.tar.gz", "tag": ""}')
    governor = build_governor(load_config(write_config(tmp_path, server.url + PATH)))

    async def other_source() -> None:
        await governor.start()
        assert not governor.policy.available
        await governor.close()

    run(other_source)


def test_polling_backs_off_with_jitter_after_failures(tmp_path: Path) -> None:
    async def body() -> None:
        reloader = BundleReloader("t", LocalSource(tmp_path / "missing.tar.gz"), reload_builder("rego"),
                                  lambda p: None, ReloadSettings(poll_min_s=1.0, poll_max_s=30.0))
        ok = [reloader.next_delay() for _ in range(50)]
        assert all(1.0 <= d <= 30.0 for d in ok)
        assert len(set(ok)) > 40
        ceilings = []
        for _ in range(8):
            assert await reloader.poll() is False
            delays = [reloader.next_delay() for _ in range(20)]
            ceilings.append(max(delays))
            assert all(d <= 30.0 for d in delays)
        assert ceilings[0] <= 1.0
        assert ceilings[3] > 4.0
        assert ceilings[-1] > 15.0
        assert reloader.status.consecutive_failures == 8

    run(body)


def test_a_bundle_whose_data_a_hook_refuses_is_not_activated(tmp_path: Path, bundles: dict[str, bytes]) -> None:
    """The budget hook reads per-tenant caps from the policy's data: malformed caps refuse the set."""
    (tmp_path / "good.tar.gz").write_bytes(bundles["A"])
    bad_folder = tmp_path / "bad"
    shutil.copytree(POLICIES, bad_folder)
    caps = bad_folder / "agentgov" / "budgets"
    caps.mkdir(parents=True)
    (caps / "data.yaml").write_text("per_user_tokens:\n  acme: {tokens: -5}\n")
    config = write_config(tmp_path, "good.tar.gz", extra={"budgets": {
        "limits": [{"name": "per_user_tokens", "key": "subject", "window": "1h", "tokens": 1000}]}})
    governor = build_governor(load_config(config))

    async def body() -> None:
        await governor.start()
        assert revision_of(governor) == "A"
        (tmp_path / "good.tar.gz").write_bytes(build_bundle([bad_folder], revision="bad caps"))
        assert await until(lambda: governor.service_status()["active"]["consecutive_failures"] > 0)
        assert revision_of(governor) == "A"
        assert "per_user_tokens" in governor.service_status()["active"]["last_error"]
        await governor.close()

    run(body)


# --- configuration errors are clear ----------------------------------------------------------------

@pytest.mark.parametrize(("bundle", "message"), [
    ({"source": "x.tar.gz", "poll": 3}, "unknown key(s) policy.bundle.poll"),
    ({}, "policy.bundle.source is required"),
    ({"source": "x.tar.gz", "poll_min_s": 5, "poll_max_s": 1}, "poll_max_s must not be below poll_min_s"),
    ({"source": "x.tar.gz", "poll_min_s": 0}, "poll_min_s must be a positive number"),
    ({"source": "x.tar.gz", "token_env": "AGENTGOV_TEST_UNSET_VARIABLE"}, "AGENTGOV_TEST_UNSET_VARIABLE is not set"),
    ({"source": "x.tar.gz", "verification": {"keys": {}}}, "verification.keys must map key ids"),
    ({"source": "x.tar.gz", "verification": {"keys": {"k": {"key_file": "missing.pem"}}}}, "missing.pem"),
    ({"source": "x.tar.gz", "verification": {"keys": {"k": {"key_file": "k.pem", "algorithm": "none"}}}},
     "algorithm must be one of"),
    ({"source": "x.tar.gz", "verification": {"key_id": "z", "keys": {"k": {"key_file": "k.pem"}}}},
     "key_id 'z' is not one of the configured keys"),
])
def test_bundle_configuration_errors_name_the_key(tmp_path: Path, bundle: dict[str, Any], message: str) -> None:
    (tmp_path / "k.pem").write_text("placeholder")
    (tmp_path / "agentgov.yaml").write_text(yaml.safe_dump({"policy": {"bundle": bundle}}))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(tmp_path / "agentgov.yaml")


def test_bundle_and_paths_together_or_a_bad_source_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "agentgov.yaml"
    path.write_text(yaml.safe_dump({"policy": {"paths": ["policies"], "bundle": "x.tar.gz"}}))
    with pytest.raises(ConfigError, match="set one"):
        load_config(path)
    path.write_text(yaml.safe_dump({"policy": {"bundle": "notes.txt"}, "identity": {"required": False}}))
    with pytest.raises(ConfigError, match=r"policy.bundle.source: a bundle source is oci://"):
        build_governor(load_config(path))
    path.write_text(yaml.safe_dump({"policy": {"engine": "opa", "opa_url": "http://127.0.0.1:1",
                                               "bundle": "x.tar.gz"}, "identity": {"required": False}}))
    with pytest.raises(ConfigError, match="a remote OPA loads its own bundles"):
        build_governor(load_config(path))


def test_a_folder_loaded_policy_set_has_a_stable_content_identity(tmp_path: Path, policies_copy: Path) -> None:
    path = tmp_path / "agentgov.yaml"
    path.write_text(yaml.safe_dump({"policy": {"paths": [str(policies_copy)]}, "identity": {"required": False}}))
    first, second = build_governor(load_config(path)), build_governor(load_config(path))
    assert first.revision == second.revision
    assert first.revision.startswith("sha256:")
    revoke_analyst_crm(policies_copy)
    assert build_governor(load_config(path)).revision != first.revision


def test_unavailable_sets_say_so() -> None:
    policy = PolicySet(UnavailableBackend("no bundle yet"))
    decision: Decision = asyncio.run(policy.backend.evaluate({}))
    explained = asyncio.run(policy.backend.explain({}))
    assert not policy.available
    assert policy.label == ""
    assert (decision.allow, decision.status, decision.errors) == (False, 503, ("no bundle yet",))
    assert explained.lines == ["no bundle yet"]


@pytest.mark.reliability
def test_an_unreachable_registry_is_a_failed_poll_not_a_hang(tmp_path: Path) -> None:
    """oras-py would retry for two minutes; a poll fails at once and the reloader's backoff decides."""
    port = free_port()  # nothing listens there
    governor = build_governor(load_config(write_config(tmp_path, f"oci://127.0.0.1:{port}/policies/agentgov:1")))

    async def body() -> None:
        await governor.start()
        status = governor.service_status()["active"]
        assert not status["active"]
        assert status["last_error"].startswith("unreachable: cannot pull from the registry")
        await governor.close()

    run(body)


def test_a_persisted_copy_paired_with_another_copys_tag_is_downloaded_again(
        server: BundleServer, bundles: dict[str, bytes], tmp_path: Path) -> None:
    """A crash between writing the copy and its metadata must not make a 304 keep the wrong bundle."""
    server.store[PATH] = bundles["A"]
    config = write_config(tmp_path, server.url + PATH)
    assert _start_and_stop(config) == "A"
    (tmp_path / "cache" / "active.tar.gz").write_bytes(bundles["B"])  # the copy changed, its metadata did not
    server.stop()

    async def restart() -> None:
        governor = build_governor(load_config(config))
        await governor.start()
        assert revision_of(governor) == "B"  # the copy serves while the source is down
        server.start()  # the source still serves A, with the ETag the metadata names
        assert await until(lambda: revision_of(governor) == "A")
        await governor.close()

    run(restart)
