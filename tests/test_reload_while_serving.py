"""A reload builds while the worker keeps deciding: Rego is compiled in a child process and handed
back serialized, the engines are assembled on the serving thread in steps with the loop given back
between them, and the result decides exactly as a set built at start-up does. Every way the child
can fail leaves a working, compiled set; Cedar builds on a worker thread."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import threading
from typing import Any

import pytest
import regorus

from agentgov.engine.backends import rego, rego_compile
from agentgov.engine.backends.rego import RegoBackend, RegoPrepared
from agentgov.engine.backends.rego_compile import CompilerUnavailable, compile_in_child
from agentgov.engine.model import Decision
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.policy_set import PolicySet, policy_set_builder, reload_builder
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.testing.cases import load_cases
from tests.conftest import POLICIES

SOURCES = discover([POLICIES])
CASES = [c for f in sorted((POLICIES / "tests").glob("*.yaml")) for c in load_cases(f, ("rego", "cedar"))
         if c.data is None]


def _reload(engine: str = "rego", sources: Any = SOURCES) -> PolicySet:
    return asyncio.run(reload_builder(engine)(sources, "r1", "", None, "test"))


def _decide(policy_set: PolicySet, policy_input: dict[str, Any]) -> Decision:
    return asyncio.run(policy_set.backend.evaluate(policy_input))


def test_a_reloaded_set_is_compiled_by_a_child_and_decides_as_one_built_at_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    started = policy_set_builder("rego")(SOURCES, "r1", "", None, "test")

    def not_here(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compiled on the serving process")

    monkeypatch.setattr(regorus.Program, "compile_from_modules", not_here)
    reloaded = _reload()
    assert isinstance(reloaded.backend, RegoBackend)
    assert reloaded.backend.compiled
    assert reloaded.label == started.label
    assert len(CASES) > 40
    for case in CASES:
        assert _decide(reloaded, case.request) == _decide(started, case.request), case.name


def test_the_engines_are_assembled_in_steps_with_the_loop_given_back_between(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = 0
    seen: dict[str, int] = {}
    real_engine, real_vm = rego._load_engine, RegoBackend._new_vm

    def load_engine(*args: Any) -> Any:
        seen["policies"] = ticks
        return real_engine(*args)

    def new_vm(self: RegoBackend) -> Any:
        seen["vm"] = ticks
        return real_vm(self)

    monkeypatch.setattr(rego, "_load_engine", load_engine)
    monkeypatch.setattr(RegoBackend, "_new_vm", new_vm)

    async def body() -> None:
        nonlocal ticks
        prepared = await asyncio.to_thread(rego.prepare_rego, SOURCES.rego, SOURCES.data)

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        backend = await RegoBackend.assemble(prepared)
        task.cancel()
        assert backend.compiled

    asyncio.run(body())
    assert seen["vm"] > seen["policies"]  # another task ran between parsing the policies and loading the VM


def test_a_child_that_cannot_run_means_compiling_here(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    def cannot_start(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no such interpreter")

    monkeypatch.setattr(rego_compile.subprocess, "run", cannot_start)
    with caplog.at_level(logging.WARNING, "agentgov.rego"):
        reloaded = _reload()
    assert isinstance(reloaded.backend, RegoBackend)
    assert reloaded.backend.compiled
    assert "compiling it here" in caplog.text
    assert _decide(reloaded, CASES[0].request) == _decide(policy_set_builder("rego")(SOURCES, "", "", None, ""),
                                                          CASES[0].request)


@pytest.mark.parametrize("stdout", [b"", b"??\n", b"OK\n" + b"not a program"])
def test_a_child_answer_that_cannot_be_used_means_compiling_here(monkeypatch: pytest.MonkeyPatch,
                                                                 stdout: bytes) -> None:
    def answers(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(args, 0, stdout, b"")

    monkeypatch.setattr(rego_compile.subprocess, "run", answers)
    reloaded = _reload()
    assert isinstance(reloaded.backend, RegoBackend)
    assert reloaded.backend.compiled


def test_the_child_reports_what_it_cannot_compile_and_fails_on_a_broken_request() -> None:
    refused = compile_in_child([("p.rego", "package agentgov\nimport rego.v1\nf := input.x\n"
                                 "decision := {\"allow\": y == 3} if { y := f with input.x as 3 }\n")],
                               "{}", "data.agentgov.decision")
    assert refused.program is None
    assert refused.why
    done = subprocess.run([sys.executable, "-m", "agentgov.engine.backends.rego_compile"], input=b"{not json",
                          capture_output=True, timeout=60, check=False)
    assert done.returncode != 0
    with pytest.raises(CompilerUnavailable):
        compile_in_child([("p.rego", "package p")], "{}", "data.p.x", timeout_s=0.000001)


def test_what_the_vm_refuses_is_reloaded_interpreted_and_still_decides() -> None:
    source = "package agentgov\nimport rego.v1\nf := input.x\ndecision := {\"allow\": y == 3} if { y := f with input.x as 3 }\n"
    prepared = rego.prepare_rego([("p.rego", source)], {"k": 1})
    assert prepared == RegoPrepared([("p.rego", source)], prepared.data_json, None)
    backend = asyncio.run(RegoBackend.assemble(prepared))
    assert not backend.compiled
    assert asyncio.run(backend.evaluate({"x": 1})).allow


def test_a_reload_refuses_what_start_up_refuses() -> None:
    broken = discover([POLICIES])
    broken.rego = [("bad.rego", "package agentgov\nthis is not rego\n")]
    with pytest.raises(PolicyLoadError):
        _reload(sources=broken)
    empty = discover([POLICIES])
    empty.rego = []
    with pytest.raises(PolicyLoadError, match="no rego policies"):
        _reload(sources=empty)


def test_cedar_reloads_on_a_worker_thread() -> None:
    reloaded = _reload("cedar")
    started = policy_set_builder("cedar")(SOURCES, "r1", "", None, "test")
    for case in CASES[:20]:
        assert _decide(reloaded, case.request) == _decide(started, case.request), case.name


def test_the_interpreter_loads_the_data_only_when_the_vm_does_not_decide() -> None:
    """A compiled set decides on the VM: the interpreter's copy of the data (explain, coverage) is
    made on first use, and then answers as it would have from the start."""
    source = ("package agentgov\nimport rego.v1\nlimit := data.limits.max\n"
              "decision := {\"allow\": input.n <= limit}\n")
    backend = RegoBackend([("p.rego", source)], {"limits": {"max": 3}})
    assert backend.compiled
    assert not backend._pristine_has_data
    assert asyncio.run(backend.evaluate({"n": 2})).allow
    explained = asyncio.run(backend.explain({"n": 2}))
    assert "data.agentgov.limit = 3" in explained.lines
    assert backend._pristine_has_data
    interpreted = RegoBackend([("p.rego", source)], {"limits": {"max": 3}}, compiled=False)
    assert interpreted._pristine_has_data  # it decides: loaded before the first decision


def test_a_backend_collected_on_another_thread_hands_its_engines_back_to_their_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """regorus' objects may only be dropped by the thread that made them: a backend freed by a
    collection another thread ran (an old set held in a reference cycle) leaks nothing and warns
    nothing; its own thread drops the engines on its next decision."""
    raised: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    monkeypatch.setattr(rego, "_orphans", {})
    backend = RegoBackend(SOURCES.rego, SOURCES.data)
    cycle: dict[str, Any] = {"backend": backend}
    cycle["self"] = cycle
    del backend, cycle
    collector = threading.Thread(target=gc.collect)
    collector.start()
    collector.join()
    assert raised == []
    assert len(rego._orphans.get(threading.get_ident(), [])) >= 3  # interpreter, VM, program
    other = RegoBackend([("p.rego", "package agentgov\nimport rego.v1\ndecision := {\"allow\": true}\n")])
    assert asyncio.run(other.evaluate({})).allow
    assert threading.get_ident() not in rego._orphans
    assert raised == []
