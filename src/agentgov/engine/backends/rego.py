"""Embedded Rego through regorus (PyPI `gordon-to-regorus`), the default backend.

Policies are checked statically before they load (see policy.rego_check); at run time any engine
error, a Rust panic included (`pyo3_runtime.PanicException` derives from BaseException), is a deny.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
import regorus

from agentgov.engine.backends.base import (
    REASON_CONFLICT,
    REASON_UNDEFINED,
    Explanation,
    ResultReader,
    decision_from_document,
    engine_error,
    first_line,
    is_fatal,
)
from agentgov.engine.backends.rego_compile import CompilerUnavailable, compile_in_child
from agentgov.engine.model import Decision
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.policy.rego_check import check_modules, parse_problem, ref_parts

DEFAULT_RULE = "data.agentgov.decision"
# What a reload's assembly sleeps between its steps on the serving thread: long enough for the
# decisions that were waiting to run to their next wait, short against a reload's poll interval.
YIELD_S = 0.005
log = logging.getLogger("agentgov.rego")


def data_json(data: Mapping[str, Any]) -> str:
    """Policy data as the JSON text the engines load: orjson (a 20,000-tool catalog encodes in a
    tenth of the time, and holds the GIL that much less beside a serving event loop on a reload);
    the standard encoder for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(dict(data), option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(dict(data))


def build_engine(modules: list[tuple[str, str]], data: Mapping[str, Any],
                 encoded: str | None = None) -> regorus.Engine:
    """Check, parse and load modules and data (`encoded`: the data's JSON when the caller has it)
    into a fresh engine. Raises PolicyLoadError."""
    _check(modules, data)
    return _load_engine(modules, encoded if encoded is not None else data_json(data))


def _check(modules: list[tuple[str, str]], data: Mapping[str, Any]) -> None:
    """Raise PolicyLoadError with what the static checks find (the same at start-up and on a reload)."""
    problems = check_modules(modules, data)
    if problems:
        raise PolicyLoadError(problems)


def _load_engine(modules: list[tuple[str, str]], encoded: str | None) -> regorus.Engine:
    """A fresh interpreter with checked modules, and the data's JSON when given (`None`: loaded
    later, see RegoBackend._interpreter). Raises PolicyLoadError."""
    engine = regorus.Engine()
    for file, source in modules:
        try:
            engine.add_policy(file, source)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise PolicyLoadError([parse_problem(file, str(exc))]) from None
    if encoded is not None:
        engine.add_data_json(encoded)
    return engine


@dataclass(frozen=True)
class RegoPrepared:
    """A Rego policy set made ready off the event loop, for a reload: checked modules, the data as
    JSON, and the program compiled by a child process, serialized (regorus' objects belong to the
    thread that made them; bytes do not). `compile_here`: the child could not compile at all, so
    the serving thread compiles, as at start-up."""
    modules: list[tuple[str, str]]
    data_json: str
    program: bytes | None
    compile_here: bool = False


def prepare_rego(modules: list[tuple[str, str]], data: Mapping[str, Any], rule: str = DEFAULT_RULE) -> RegoPrepared:
    """Everything of a reload's Rego build that need not happen on the serving thread (blocking:
    run it on a worker thread). Raises PolicyLoadError."""
    if not modules:
        raise PolicyLoadError([])
    _check(modules, data)
    encoded = data_json(data)
    try:
        compiled = compile_in_child(modules, encoded, rule)
    except CompilerUnavailable as exc:
        log.warning("compiling the policy in a child process failed (%s); compiling it here", exc)
        return RegoPrepared(modules, encoded, None, compile_here=True)
    if compiled.program is None:
        log.debug("rule %s runs interpreted: %s", rule, first_line(compiled.why))
    return RegoPrepared(modules, encoded, compiled.program)


# regorus' objects may only be dropped by the thread that made them: dropped elsewhere, pyo3 leaks
# them (and says so on stderr). A backend freed by a garbage collection that another thread ran (a
# reference cycle that held an old policy set, collected while a reload's thread allocated) hands its
# engines here instead, and their own thread drops them on its next decision or reload.
_orphans: dict[int, list[Any]] = {}
_orphans_lock = threading.Lock()


def _drop_orphans() -> None:
    """Drop what other threads handed back to this one (cheap when there is nothing)."""
    if _orphans:
        with _orphans_lock:
            mine = _orphans.pop(threading.get_ident(), None)
        del mine


class RegoBackend:
    name = "rego"

    def __init__(self, modules: list[tuple[str, str]], data: Mapping[str, Any] | None = None,
                 rule: str = DEFAULT_RULE, reader: ResultReader = decision_from_document,
                 compiled: bool = True) -> None:
        if not modules:
            raise PolicyLoadError([])
        _check(modules, data or {})
        encoded = data_json(data or {})
        engine = _load_engine(modules, None)  # the policies parse, or this is a load error
        # regorus' compiled mode (a Program run by its VM) decides the shipped library 3-4x faster
        # than the interpreter, with the same answers (tests/test_backends.py compares every case).
        # It refuses `with` and reads of the whole of `data`: those policies stay interpreted.
        self._adopt(modules, encoded, engine, _compile(modules, encoded, rule) if compiled else None, rule, reader)

    @classmethod
    async def assemble(cls, prepared: RegoPrepared, rule: str = DEFAULT_RULE,
                       reader: ResultReader = decision_from_document) -> RegoBackend:
        """The backend from a reload's prepared set, on the serving thread, in steps with the event
        loop given back after each: parsing the policies, then loading the data into the VM (or, for
        a policy the VM cannot run, into the interpreter), which parses the whole data document
        (~40 ms with a 20,000-tool catalog)."""
        engine = _load_engine(prepared.modules, None)
        await asyncio.sleep(YIELD_S)
        program = None if prepared.compile_here else _deserialize(prepared.program)
        if prepared.compile_here or (program is None and prepared.program is not None):
            program = _compile(prepared.modules, prepared.data_json, rule)  # as at start-up
        backend = cls.__new__(cls)
        backend._adopt(prepared.modules, prepared.data_json, engine, program, rule, reader)
        await asyncio.sleep(YIELD_S)
        return backend

    def _adopt(self, modules: list[tuple[str, str]], encoded: str, engine: regorus.Engine,
               program: regorus.Program | None, rule: str, reader: ResultReader) -> None:
        _drop_orphans()
        self._owner = threading.get_ident()
        self.rule = rule
        self._read = reader
        # regorus's eval_rule refuses partial object rules (`result["allowed"] := allow`, the OPA-Envoy
        # idiom); those paths are evaluated as a query instead, about 20 µs slower.
        self._as_query = False
        # A pristine copy of the loaded engine: after a Rust panic regorus's engine is poisoned (every
        # later evaluation fails with "recursion detected"), so the working engine is replaced by a
        # fresh clone and one bad input cannot turn every later decision into an engine_error.
        # When the VM decides, the interpreter is for explain and coverage only: its copy of the
        # data is loaded on first use (a 20,000-tool catalog is ~40 ms and several MB per worker).
        self._data_json = encoded
        self._pristine = engine
        self._pristine_has_data = False
        self._engine: regorus.Engine | None = None
        self._coverage = False
        self._modules = modules
        self._program = program
        self._vm = self._new_vm() if self._program is not None else None
        if self._vm is None:
            self._interpreter()  # it decides: loaded now, not in the first decision
        self._packages = sorted({m.group(1) for _, source in modules
                                 if (m := re.search(r"^package\s+([\w.]+)", source, re.MULTILINE))})

    def _interpreter(self) -> regorus.Engine:
        """The working interpreter, with the data loaded (made on first need)."""
        if self._engine is None:
            if not self._pristine_has_data:
                self._pristine.add_data_json(self._data_json)
                self._pristine_has_data = True
            self._engine = self._pristine.clone()
            if self._coverage:
                self._engine.set_enable_coverage(True)
        return self._engine

    @property
    def compiled(self) -> bool:
        """Whether decisions run on regorus' VM (else the interpreter)."""
        return self._vm is not None

    def _new_vm(self) -> regorus.Rvm:
        vm = regorus.Rvm()
        vm.load_program(self._program)
        vm.set_data_json(self._data_json)
        return vm

    def __del__(self) -> None:
        if getattr(self, "_owner", None) in (None, threading.get_ident()):
            return
        held = [getattr(self, name, None) for name in ("_pristine", "_engine", "_vm", "_program")]
        with _orphans_lock:
            _orphans.setdefault(self._owner, []).extend(h for h in held if h is not None)

    def evaluate_sync(self, policy_input: Mapping[str, Any]) -> Decision:
        _drop_orphans()
        try:
            # orjson: the input crosses into Rust as JSON text on every decision, and the standard
            # library's encoder was a tenth of a decision's time. It refuses what JSON cannot hold
            # (an integer beyond 64 bits, a non-string key): an engine error, so a deny.
            text = orjson.dumps(policy_input).decode()
            if self._vm is not None and not self._coverage:
                self._vm.set_input_json(text)
                answer = self._vm.execute()
                result = None if answer == _VM_UNDEFINED else orjson.loads(answer)
            else:
                engine = self._interpreter()
                engine.set_input_json(text)
                result = self._eval(engine)
        except BaseException as exc:
            if is_fatal(exc):
                raise
            self._heal()
            return engine_error(self.name, f"{type(exc).__name__}: {exc}")
        decision = self._read(result, engine=self.name)
        if decision.reasons == (REASON_UNDEFINED,):
            definitions, has_default = self._definitions()
            if has_default:
                # A rule with a default is never undefined, unless two definitions matched with
                # different values: real OPA fails with eval_conflict_error there; the embedded engine
                # answers undefined. Name it, and the definitions, so the author can fix it.
                return replace(decision, reasons=(REASON_CONFLICT,), errors=(
                    f"{self.rule}: more than one definition matched this input with different values (a "
                    f"conflict: OPA's eval_conflict_error); definitions at {', '.join(definitions)}: make "
                    "their conditions exclusive, or build the value in one rule",))
            return replace(decision, errors=(self._undefined_hint(),))
        return decision

    def _definitions(self) -> tuple[list[str], bool]:
        """Where the decision rule is defined (`file:line`), and whether it has a `default`."""
        package, _, name = self.rule.removeprefix("data.").rpartition(".")
        head = re.compile(rf"^\s*(default\s+)?{re.escape(name)}\b\s*(?::=|=|if\b|\{{|contains\b|\[)")
        found, has_default = [], False
        for file, source in self._modules:
            declared = re.search(r"^package\s+([\w.]+)", source, re.MULTILINE)
            if declared is None or declared.group(1) != package:
                continue
            for number, line in enumerate(source.splitlines(), 1):
                m = head.match(line)
                if m and m.group(1):
                    has_default = True
                elif m:
                    found.append(f"{file}:{number}")
        return found, has_default

    def _undefined_hint(self) -> str:
        """Why a decision is undefined, in words that lead to the fix (the rule's package may not exist)."""
        package = self.rule.rsplit(".", 1)[0]
        if package.removeprefix("data.") not in self._packages:
            loaded = ", ".join(f"data.{p}" for p in self._packages) or "none"
            return (f"no policy defines {self.rule} (packages loaded: {loaded}); name the decision rule with "
                    f"--rule, or policy.rule in agentgov.yaml")
        return (f"{self.rule} is undefined for this input: give it a default (`default decision := …`) "
                f"so that every input gets an answer")

    def _heal(self) -> None:
        """Start again from the loaded policy set (cheap: a clone of already-compiled policies)."""
        self._engine = None  # a fresh clone on next use
        if self._program is not None:
            self._vm = self._new_vm()

    def _eval(self, engine: regorus.Engine) -> Any:
        if not self._as_query:
            try:
                return engine.eval_rule(self.rule)
            except RuntimeError as exc:
                if not str(exc).startswith("not a valid rule path"):
                    raise
                self._as_query = True
        answer = engine.eval_query(self.rule)
        results = answer.get("result", [])
        return results[0]["expressions"][0]["value"] if results else None

    async def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        return self.evaluate_sync(policy_input)

    async def explain(self, policy_input: Mapping[str, Any]) -> Explanation:
        """The decision plus the value of every rule in the decision's package, and the lines evaluated."""
        decision = self.evaluate_sync(policy_input)
        engine = self._interpreter().clone()
        engine.set_enable_coverage(True)
        engine.clear_coverage_data()
        lines: list[str] = []
        package = self.rule.rsplit(".", 1)[0]
        try:
            engine.set_input_json(json.dumps(policy_input))
            self._eval(engine)
            for rule in self._package_rules(package):
                try:
                    value = engine.eval_rule(f"{package}.{rule}")
                except BaseException as exc:
                    if is_fatal(exc):
                        raise
                    value = f"<error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}>"
                shown = "undefined" if value is None else json.dumps(value, sort_keys=True, default=_set_as_list)
                lines.append(f"{package}.{rule} = {shown}")
            report = json.loads(engine.get_coverage_report_as_json())
        except BaseException as exc:
            if is_fatal(exc):
                raise
            return Explanation(decision, [*lines, f"explain stopped: {type(exc).__name__}"])
        for entry in report.get("files", []):
            if entry["covered"]:
                lines.append(f"evaluated {entry['path']} lines {_ranges(entry['covered'])}")
        return Explanation(decision, lines)

    def _package_rules(self, package: str) -> list[str]:
        names: list[str] = []
        for entry in json.loads(self._interpreter().get_ast_as_json()):
            ast = entry["ast"]
            if "data." + ".".join(ref_parts(ast["package"]["refr"])) != package:
                continue
            for rule in ast.get("rules", []):
                head = rule.get("Spec", {}).get("head", {})
                ref = (rule.get("Default") or head.get("Compr") or head.get("Set") or {}).get("refr")
                if ref and "Var" in ref and ref["Var"]["value"] not in names:
                    names.append(ref["Var"]["value"])
        return names

    def enable_coverage(self) -> None:
        self._coverage = True
        self._interpreter().set_enable_coverage(True)

    def coverage_report(self) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = json.loads(self._interpreter().get_coverage_report_as_json()).get("files", [])
        return files

    async def close(self) -> None:
        return None


_VM_UNDEFINED = '"<undefined>"'  # what regorus' VM answers for an undefined rule


def _compile(modules: list[tuple[str, str]], data_json: str, rule: str) -> regorus.Program | None:
    """The policy compiled for regorus' VM, or None where it cannot be (the interpreter decides)."""
    try:
        return regorus.Program.compile_from_modules(data_json, modules, [rule])
    except BaseException as exc:
        if is_fatal(exc):
            raise
        log.debug("rule %s runs interpreted: %s", rule, first_line(str(exc)))
        return None


def _deserialize(blob: bytes | None) -> regorus.Program | None:
    """A program a child compiled; None when there is none, or when this regorus cannot take it
    whole (it would need recompiling: the caller compiles here then)."""
    if blob is None:
        return None
    try:
        program, partial = regorus.Program.deserialize_binary(blob)
    except BaseException as exc:
        if is_fatal(exc):
            raise
        log.warning("the compiled policy could not be read back (%s)", first_line(str(exc)))
        return None
    if partial:
        log.warning("the compiled policy came back incomplete")
        return None
    return program


def _set_as_list(value: Any) -> Any:
    """regorus returns Rego sets as Python sets; show them as Rego would, sorted."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    return str(value)


def _ranges(numbers: list[int]) -> str:
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(out)
