"""What goes into a bundle and what comes out of one.

`collect` turns policy folders into bundle files (the inverse of `sources.discover`'s layout);
`bundle_sources` reads a bundle's files back into the same `PolicySources` every command loads, so a
bundle and the folder it was built from give the same decisions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from agentgov.engine.bundles.archive import CEDAR_ROOT, MANIFEST, SIGNATURES, bundle_error
from agentgov.engine.bundles.hashing import refuse_constant
from agentgov.engine.policy.problems import PolicyLoadError, Problem
from agentgov.engine.policy.sources import DATA_FILES, SKIP_DIRS, PolicySources, merge_data
from agentgov.engine.yamldoc import load_yaml

_CEDAR_SUFFIXES = (".cedar", ".cedarschema", ".cedarschema.json")
_REFUSED = {"policy.wasm": "Wasm", "plan.json": "plan"}


@dataclass(frozen=True)
class Manifest:
    """The fields of OPA's `.manifest` that agentgov reads and writes."""

    revision: str
    roots: tuple[str, ...]
    rego_version: int = 1
    metadata: Mapping[str, Any] | None = None

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"revision": self.revision, "roots": list(self.roots),
                               "rego_version": self.rego_version}
        if self.metadata:
            doc["metadata"] = dict(self.metadata)
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def collect(roots: Iterable[Path], *, include_tests: bool = False) -> dict[str, bytes]:
    """Bundle files from policy folders: Rego as is, each data.json/data.yaml as `<dir>/data.json`
    (YAML converted, so real OPA needs no YAML support), Cedar files under `cedar/`. Test modules
    and case files stay out unless asked for: they are checked before the build, not shipped."""
    files: dict[str, bytes] = {}
    problems: list[Problem] = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root)
            if any(part in SKIP_DIRS for part in rel.parts):
                continue
            name = _bundle_name(path, rel, include_tests, problems)
            if name is None:
                continue
            if name in files:
                problems.append(Problem(str(path), 1, 1, f"{name} is already in the bundle from another root",
                                        "bundle_error"))
                continue
            files[name] = _content(path, name, problems)
    if problems:
        raise PolicyLoadError(problems)
    return files


def _bundle_name(path: Path, rel: Path, include_tests: bool, problems: list[Problem]) -> str | None:
    posix = rel.as_posix()
    bundled = path.name.endswith((".rego", *_CEDAR_SUFFIXES)) or path.name in DATA_FILES
    if bundled and posix.startswith(CEDAR_ROOT) and not path.name.endswith(_CEDAR_SUFFIXES):
        problems.append(Problem(str(path), 1, 1, f"a top-level {CEDAR_ROOT} folder is where a bundle keeps Cedar "
                                "files; move Rego and data out of it", "bundle_error"))
        return None
    if path.name.endswith("_test.rego"):
        return posix if include_tests else None
    if path.name.endswith(".rego"):
        return posix
    if path.name.endswith(_CEDAR_SUFFIXES):
        return CEDAR_ROOT + posix
    if path.name in DATA_FILES:
        return str(PurePosixPath(posix).parent / "data.json").removeprefix("./")
    return None


def _content(path: Path, name: str, problems: list[Problem]) -> bytes:
    raw = path.read_bytes()
    if not name.endswith("data.json") or name.startswith(CEDAR_ROOT):
        return raw
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text) if path.suffix == ".json" else load_yaml(text)
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        # yaml.safe_load gives dates and sets that JSON has no place for: say so, do not coerce
        problems.append(Problem(str(path), 1, 1, f"not representable as bundle JSON: {exc}", "bundle_error"))
        return b""


def content_revision(files: Mapping[str, bytes]) -> str:
    """A revision derived from the content alone, so an unchanged policy set keeps its revision."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


def owned_roots(files: Mapping[str, bytes]) -> tuple[str, ...]:
    """The roots a bundle of these files owns: each Rego package's first segment, and each data
    document's (its folder's first segment, or the top-level keys of a root data.json)."""
    roots: set[str] = set()
    for name, content in files.items():
        if name.startswith(CEDAR_ROOT):
            continue
        if name.endswith(".rego") and (pkg := package_of(content.decode("utf-8", "replace"))):
            roots.add(pkg.split(".")[0])
        elif name.endswith("data.json") and "/" in name:
            roots.add(name.split("/", 1)[0])
        elif name == "data.json" and isinstance(doc := json.loads(content), dict):
            roots.update(doc)
    return tuple(sorted(roots))


def package_of(source: str) -> str | None:
    for line in source.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "package":
            return words[1]
    return None


def bundle_sources(files: Mapping[str, bytes], where: str) -> tuple[PolicySources, Manifest | None]:
    """The policy sources in a bundle's files, and its manifest if it has one."""
    found = PolicySources()
    problems: list[Problem] = []
    manifest = _manifest(files.get(MANIFEST), where)
    for name in sorted(files):
        label = f"{where}:/{name}"
        base = name.rsplit("/", 1)[-1]
        if name in (MANIFEST, SIGNATURES):
            continue
        if base in _REFUSED:
            problems.append(Problem(label, 1, 1, f"{_REFUSED[base]} policies cannot be evaluated by agentgov",
                                    "bundle_error"))
        elif name.startswith(CEDAR_ROOT):
            _cedar(found, label, _text(files[name], label, problems), problems)
        elif name.endswith(".rego"):
            found.rego.append((label, _text(files[name], label, problems)))
        elif base in ("data.json", "data.yaml"):
            _data(found, name, files[name], label, problems)
        else:
            problems.append(Problem(label, 1, 1, "not a file a policy bundle carries (Rego, data.json, data.yaml, "
                                    ".manifest, .signatures.json, or Cedar under cedar/)", "bundle_error"))
    if manifest is not None and not problems:
        problems.extend(_outside_roots(found, manifest.roots, where))
    if problems:
        raise PolicyLoadError(problems)
    return found, manifest


def _text(content: bytes, label: str, problems: list[Problem]) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(Problem(label, 1, 1, "not valid UTF-8", "bundle_error"))
        return ""


def _cedar(found: PolicySources, label: str, text: str, problems: list[Problem]) -> None:
    if label.endswith(".cedar"):
        found.cedar.append((label, text))
    elif label.endswith((".cedarschema", ".cedarschema.json")) and found.cedar_schema is None:
        found.cedar_schema = (label, text)
    else:
        problems.append(Problem(label, 1, 1, "unexpected file under cedar/ (a second schema, or not Cedar)",
                                "bundle_error"))


def _data(found: PolicySources, name: str, content: bytes, label: str, problems: list[Problem]) -> None:
    try:
        text = content.decode("utf-8")
        doc = load_yaml(text) if name.endswith(".yaml") else json.loads(text, parse_constant=refuse_constant)
    except (ValueError, yaml.YAMLError) as exc:
        problems.append(Problem(label, 1, 1, f"unreadable data document: {exc}", "bundle_error"))
        return
    at = [part for part in PurePosixPath(name).parent.parts if part not in (".", "")]
    if not at and not isinstance(doc, dict):
        problems.append(Problem(label, 1, 1, "the root data document must be an object", "bundle_error"))
        return
    nested: Any = doc
    for key in reversed(at):
        nested = {key: nested}
    merge_data(found.data, nested, label, [], problems)


def _manifest(content: bytes | None, where: str) -> Manifest | None:
    if content is None:
        return None
    try:
        doc = json.loads(content.decode("utf-8"), parse_constant=refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bundle_error(f"{where}:/.manifest", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise bundle_error(f"{where}:/.manifest", "must be a JSON object")
    roots = doc.get("roots", [""])
    revision = doc.get("revision", "")
    version = doc.get("rego_version", 1)
    if not (isinstance(roots, list) and all(isinstance(r, str) for r in roots)) or not isinstance(revision, str):
        raise bundle_error(f"{where}:/.manifest", "roots must be a list of strings and revision a string")
    if version not in (0, 1) or isinstance(version, bool):
        raise bundle_error(f"{where}:/.manifest", f"rego_version {version!r}: agentgov reads Rego v1 "
                           "(rego_version 1) only")
    if version == 0:
        raise bundle_error(f"{where}:/.manifest", "rego_version 0 (pre-1.0 Rego) is not supported; rebuild "
                           "with OPA 1.x or `agentgov build`")
    metadata = doc.get("metadata")
    return Manifest(revision, tuple(roots), version, metadata if isinstance(metadata, dict) else None)


def _outside_roots(found: PolicySources, roots: tuple[str, ...], where: str) -> list[Problem]:
    """OPA refuses a bundle whose packages or data lie outside its declared roots; so does agentgov."""
    owned = [tuple(r.strip("/").split("/")) if r.strip("/") else () for r in roots]

    def inside(path: tuple[str, ...]) -> bool:
        return any(path[:len(root)] == root for root in owned)

    problems = []
    for label, source in found.rego:
        pkg = package_of(source)
        if pkg and not inside(tuple(pkg.split("."))):
            problems.append(Problem(label, 1, 1, f"package {pkg} is outside the manifest roots {list(roots)}",
                                    "bundle_error"))
    for path in _data_paths(found.data, ()):
        if not inside(path):
            problems.append(Problem(where, 1, 1, f"data.{'.'.join(path)} is outside the manifest roots "
                                    f"{list(roots)}", "bundle_error"))
            break
    return problems


def _data_paths(doc: Mapping[str, Any], at: tuple[str, ...]) -> Iterable[tuple[str, ...]]:
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            yield from _data_paths(value, (*at, key))
        else:
            yield (*at, key)
