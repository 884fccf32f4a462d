"""Find policy files under the paths a user names and sort them by role.

Layout rules (documented in docs/policies.md):
- `*.rego`: Rego modules; `*_test.rego`: Rego unit tests.
- `*.cedar`: Cedar policies; `*.cedarschema` (Cedar syntax) or `*.cedarschema.json`: the Cedar schema.
- `data.json` / `data.yaml` / `data.yml`: a data document, placed at its folder's path relative to the
  root that was named (`policies/agentgov/catalog/data.yaml` → `data.agentgov.catalog`), exactly as
  OPA's loader (`opa eval -d policies/`) and OPA bundles place it; documents are deep-merged. A
  JSON/YAML file of another name in a folder called `data` is refused: it was a data file under an
  older layout, and ignoring it would silently drop data.
- `*.yaml` / `*.yml` anywhere else with a top-level `cases:` key: decision cases for `agentgov test`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentgov.engine.gc_pause import gc_paused
from agentgov.engine.policy.problems import Problem, yaml_problem
from agentgov.engine.yamldoc import load_yaml

SKIP_DIRS = {".git", "__pycache__", ".venv", "node_modules"}
BUNDLE_SUFFIXES = (".tar.gz", ".tgz")  # a path with one of these is read as an OPA bundle


@dataclass
class PolicySources:
    rego: list[tuple[str, str]] = field(default_factory=list)
    rego_tests: list[tuple[str, str]] = field(default_factory=list)
    cedar: list[tuple[str, str]] = field(default_factory=list)
    cedar_schema: tuple[str, str] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    case_files: list[Path] = field(default_factory=list)
    bundles: list[tuple[str, str]] = field(default_factory=list)  # (manifest revision, sha256) of each bundle read

    @property
    def revision(self) -> str:
        """The loaded bundles' identity, for decisions and audit records ("" for plain folders)."""
        return "+".join(f"{revision}@sha256:{digest[:12]}" for revision, digest in self.bundles)

    @property
    def empty(self) -> bool:
        return not (self.rego or self.rego_tests or self.cedar)


def read_root(root: Path, found: PolicySources, problems: list[Problem]) -> None:
    """Read every policy file below one folder (or one file) into `found`. Bundle files are read by
    `policy.discovery.discover`, which builds on this module and the bundle reader."""
    files = [root] if root.is_file() else sorted(_walk(root))
    for path in files:
        _classify(path, root if root.is_dir() else root.parent, found, problems)


def _walk(root: Path) -> Iterable[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not any(part in SKIP_DIRS for part in path.parts):
            yield path


DATA_FILES = ("data.json", "data.yaml", "data.yml")


def _classify(path: Path, root: Path, found: PolicySources, problems: list[Problem]) -> None:
    name = path.name
    if name.endswith(".rego"):
        target = found.rego_tests if name.endswith("_test.rego") else found.rego
        target.append((str(path), _read(path)))
    elif name.endswith(".cedar"):
        found.cedar.append((str(path), _read(path)))
    elif name.endswith((".cedarschema", ".cedarschema.json")):
        set_schema(found, (str(path), _read(path)), problems)
    elif name in DATA_FILES:
        doc = _parse_data(path, problems)
        if doc is not None:
            at = list(path.parent.relative_to(root).parts)
            nested: dict[str, Any] = doc
            for key in reversed(at):
                nested = {key: nested}
            merge_data(found.data, nested, str(path), [], problems)
    elif path.suffix in (".json", ".yaml", ".yml"):
        if "data" in path.relative_to(root).parent.parts and not is_case_file(path, []):
            problems.append(Problem(str(path), 1, 1, "data files are named data.json or data.yaml and land at "
                                    "their folder's path (as OPA places them); rename this file or move it",
                                    "load_error"))
        elif path.suffix in (".yaml", ".yml") and is_case_file(path, problems):
            found.case_files.append(path)


def set_schema(found: PolicySources, schema: tuple[str, str], problems: list[Problem]) -> None:
    if found.cedar_schema is not None:
        problems.append(Problem(schema[0], 1, 1, f"second Cedar schema (first: {found.cedar_schema[0]})",
                                "load_error"))
    else:
        found.cedar_schema = schema


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _parse_data(path: Path, problems: list[Problem]) -> dict[str, Any] | None:
    text = _read(path)
    try:
        with gc_paused():
            doc = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except json.JSONDecodeError as exc:
        problems.append(Problem(str(path), exc.lineno, exc.colno, f"invalid JSON: {exc.msg}", "load_error"))
        return None
    except yaml.YAMLError as exc:
        problems.append(yaml_problem(str(path), exc))
        return None
    if not isinstance(doc, dict):
        problems.append(Problem(str(path), 1, 1, "a data document must be an object", "load_error"))
        return None
    return doc


def merge_data(into: dict[str, Any], doc: Mapping[str, Any], file: str, at: list[str],
               problems: list[Problem]) -> None:
    """Deep-merge objects; two files setting the same non-object key is an error, never last-wins."""
    for key, value in doc.items():
        if key in into and isinstance(into[key], dict) and isinstance(value, dict):
            merge_data(into[key], value, file, [*at, key], problems)
        elif key in into:
            where = ".".join([*at, key])
            problems.append(Problem(file, 1, 1, f"data conflict: data.{where} is already set by another file",
                                    "load_error"))
        else:
            into[key] = value


def is_case_file(path: Path, problems: list[Problem]) -> bool:
    """A YAML file with a top-level `cases:` key; YAML that does not parse is a problem, not a no."""
    try:
        doc = load_yaml(_read(path))  # the C loader: the library's case files took 0.2 s to parse in Python
    except yaml.YAMLError as exc:
        problems.append(yaml_problem(str(path), exc))
        return False
    return isinstance(doc, dict) and "cases" in doc
