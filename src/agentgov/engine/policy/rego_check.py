"""Static checks for Rego that the embedded engine (regorus) would otherwise get wrong at run time.

regorus reports an unknown function only when evaluation reaches the call, and some builtins it
lists (`http.send`) silently evaluate to undefined: `allow if not blocked` would then allow. So every
call in every module is resolved here, before a policy is accepted: to a user-defined function, or
to a builtin the engine really implements. Anything else is rejected with its rule and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import regorus

from agentgov.engine.policy.problems import Problem

# Builtins regorus lists but that must not be used in policy: they are fail-open or nondeterministic
# in ways that break the decision contract.
_FORBIDDEN: dict[str, str] = {
    "http.send": "network calls from policy are not allowed (the embedded engine evaluates it to "
                 "undefined); enrich the input in a hook instead",
}
# Language-level calls the engine handles outside its builtin table.
_LANGUAGE_CALLS = frozenset({"print", "internal.member_2", "internal.member_3"})
_HINTS: dict[str, str] = {
    "io.jwt.": "JWTs are verified by the identity hook; use the verified claims in input.subject.claims",
    "crypto.": "crypto builtins are not available in the embedded engine; use the remote OPA backend",
    "net.lookup_ip_addr": "network calls from policy are not allowed",
}
_LOCATION = re.compile(r"-->\s*(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)")


@cache
def supported_builtins() -> frozenset[str]:
    """The builtins this regorus build implements, read from the engine itself (`opa.runtime()`)."""
    engine = regorus.Engine()
    engine.add_policy("probe.rego", "package agentgov_probe\nruntime := opa.runtime()\n")
    runtime = engine.eval_rule("data.agentgov_probe.runtime")
    return frozenset(runtime["builtins"]) - frozenset(_FORBIDDEN) | _LANGUAGE_CALLS


def parse_problem(file: str, message: str) -> Problem:
    """Turn a regorus error (source excerpt, `error:` line, Rust backtrace) into a located Problem."""
    text = message.split("Stack backtrace:")[0]
    loc = _LOCATION.search(text)
    msg = next((ln.strip()[len("error:"):].strip() for ln in text.splitlines()
                if ln.strip().startswith("error:")), text.strip().splitlines()[0] if text.strip() else "error")
    if loc:
        return Problem(loc["file"], int(loc["line"]), int(loc["col"]), msg)
    return Problem(file, 1, 1, msg)


@dataclass
class _Module:
    file: str
    source: str
    package: str
    imports: dict[str, str] = field(default_factory=dict)
    functions: set[str] = field(default_factory=set)
    rules: list[dict[str, Any]] = field(default_factory=list)


def check_modules(modules: list[tuple[str, str]], data: Mapping[str, Any] | None = None) -> list[Problem]:
    """Parse every module, resolve every call, and refuse what real OPA refuses though the embedded
    engine accepts it: reading the whole of `data` from inside it (recursive in OPA), and a rule at
    the same path as a data document. Returns all problems (empty when fine)."""
    problems: list[Problem] = []
    parsed: list[_Module] = []
    for file, source in modules:
        engine = regorus.Engine()
        try:
            engine.add_policy(file, source)
            ast = json.loads(engine.get_ast_as_json())[0]["ast"]
        except BaseException as exc:  # regorus raises RuntimeError, and PanicException (a BaseException)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            problems.append(parse_problem(file, str(exc)))
            continue
        parsed.append(_index(file, source, ast))
    functions = {f"{m.package}.{name}" for m in parsed for name in m.functions}
    builtins = supported_builtins()
    for module in parsed:
        problems.extend(_whole_data_reads(module))
        if data:
            problems.extend(_data_conflicts(module, data))
    for module in parsed:
        for rule_name, call_name, span in _calls(module):
            resolved = _resolve(module, call_name)
            if resolved in functions or call_name in builtins:
                continue
            problems.append(Problem(module.file, span["line"], span["col"],
                                    f"rule `{rule_name}`: {_unsupported_message(call_name)}",
                                    "rego_type_error"))
    if parsed and not problems:
        problems.extend(_compile_problems(modules))
    return problems


def _compile_problems(modules: list[tuple[str, str]]) -> list[Problem]:
    """What the engine's compiler refuses (an unsafe variable, a recursive rule), which it checks only
    when it first evaluates: compiled here with a trivial query, as OPA compiles at load time."""
    engine = regorus.Engine()
    try:
        for file, source in modules:
            engine.add_policy(file, source)
        engine.eval_query("true")
    except BaseException as exc:  # RuntimeError, or PanicException (a BaseException)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        problem = parse_problem(modules[0][0], str(exc))
        return [Problem(problem.file, problem.line, problem.col, problem.message, "rego_compile_error")]
    return []


def _whole_data_reads(module: _Module) -> Iterator[Problem]:
    """`object.get(data, …)`, `data[x]`, `x := data`: OPA treats a rule that reads all of `data` as
    depending on itself (rego_recursion_error); regorus evaluates it. Name the document instead."""
    for rule in module.rules:
        for span in _bare_data(rule, named=False):
            yield Problem(module.file, span["line"], span["col"],
                          f"rule `{_rule_name(rule)}` reads the whole of `data`, which real OPA refuses "
                          "(the rule would depend on itself): name the document, e.g. `data.agentgov.catalog`",
                          "rego_recursion_error")


def _bare_data(node: Any, *, named: bool) -> Iterator[dict[str, Any]]:
    """Spans of `data` not followed by a name (`data.x` and `data["x"]` name a document)."""
    if isinstance(node, dict):
        var = node.get("Var")
        if isinstance(var, dict) and var.get("value") == "data":
            if not named:
                yield var["span"]
            return
        for kind in ("RefDot", "RefBrack"):
            ref = node.get(kind)
            if isinstance(ref, dict) and isinstance(ref.get("refr"), dict):
                index = ref.get("index") if kind == "RefBrack" else None
                yield from _bare_data(ref["refr"], named=kind == "RefDot" or "String" in (index or {}))
                yield from _bare_data(index, named=False)
                return
        for value in node.values():
            yield from _bare_data(value, named=False)
    elif isinstance(node, list):
        for value in node:
            yield from _bare_data(value, named=False)


def _data_conflicts(module: _Module, data: Mapping[str, Any]) -> Iterator[Problem]:
    """A rule and a data document at one path: OPA refuses the pair (conflicting rules/data); the
    embedded engine lets the rule shadow the data. A data file belongs under its own path."""
    package = module.package.removeprefix("data.").split(".")
    seen: set[str] = set()
    for rule in module.rules:
        name = _rule_name(rule).split(".")[0]
        if name in seen or name == "?":
            continue
        seen.add(name)
        node: Any = data
        for key in [*package, name]:
            if not isinstance(node, Mapping) or key not in node:
                node = None
                break
            node = node[key]
        if node is not None:
            path = ".".join([*package, name])
            span = next((n["span"] for n in _walk(rule) if isinstance(n.get("span"), dict)), {"line": 1, "col": 1})
            yield Problem(module.file, span["line"], span["col"],
                          f"rule `{name}` and a data document are both at data.{path}; real OPA refuses this: "
                          "rename the rule or move the data", "rego_compile_error")


def _unsupported_message(name: str) -> str:
    if name in _FORBIDDEN:
        return f"builtin `{name}` is not allowed: {_FORBIDDEN[name]}"
    hint = next((h for prefix, h in _HINTS.items() if name.startswith(prefix)), None)
    base = f"unsupported builtin or undefined function `{name}` (not available in the embedded Rego engine)"
    return f"{base}; {hint}" if hint else base


def _index(file: str, source: str, ast: dict[str, Any]) -> _Module:
    package = "data." + ".".join(ref_parts(ast["package"]["refr"]))
    module = _Module(file=file, source=source, package=package, rules=ast.get("rules", []))
    for imp in ast.get("imports", []):
        parts = ref_parts(imp["refr"])
        if not parts or parts[0] != "data":
            continue
        alias = imp.get("as")
        name = source[alias["start"]:alias["end"]] if isinstance(alias, dict) else parts[-1]
        module.imports[name] = ".".join(parts)
    for rule in module.rules:
        head = rule.get("Spec", {}).get("head", {})
        if "Func" in head:
            module.functions.add(".".join(ref_parts(head["Func"]["refr"])))
    return module


def ref_parts(ref: dict[str, Any]) -> list[str]:
    if "Var" in ref:
        return [ref["Var"]["value"]]
    if "RefDot" in ref:
        return [*ref_parts(ref["RefDot"]["refr"]), ref["RefDot"]["field"][1]]
    if "RefBrack" in ref:
        index = ref["RefBrack"]["index"]
        tail = [index["String"]["value"]] if "String" in index else ["[...]"]
        return [*ref_parts(ref["RefBrack"]["refr"]), *tail]
    return ["?"]


def _rule_name(rule: dict[str, Any]) -> str:
    if "Default" in rule:
        return ".".join(ref_parts(rule["Default"]["refr"]))
    head = rule.get("Spec", {}).get("head", {})
    for kind in ("Compr", "Set", "Func"):
        if kind in head:
            return ".".join(ref_parts(head[kind]["refr"]))
    return "?"


def _calls(module: _Module) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for rule in module.rules:
        name = _rule_name(rule)
        for node in _walk(rule):
            call = node.get("Call")
            if isinstance(call, dict):
                yield name, ".".join(ref_parts(call["fcn"])), _leftmost_span(call["fcn"])


def _leftmost_span(ref: dict[str, Any]) -> dict[str, Any]:
    """The span of a call's first name segment: where a reader's eye finds the call."""
    while "Var" not in ref and len(ref) == 1:
        inner = next(iter(ref.values()))
        if not isinstance(inner, dict) or "refr" not in inner:
            break
        ref = inner["refr"]
    span: dict[str, Any] = next(iter(ref.values()))["span"]
    return span


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _resolve(module: _Module, name: str) -> str:
    """Map a call name to the `data.pkg.fn` it would refer to, if it is a user function."""
    if name.startswith("data."):
        return name
    head, _, rest = name.partition(".")
    if head in module.imports:
        return f"{module.imports[head]}.{rest}" if rest else module.imports[head]
    return f"{module.package}.{name}"
