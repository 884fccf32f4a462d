"""Where `agentgov` finds policies: folders, single files and OPA bundle files, in the order named.

Kept apart from `policy.sources` (folder layout) and `bundles` (the bundle reader) so that neither
needs the other: this module builds on both."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agentgov.engine.bundles.bundle import load_bundle
from agentgov.engine.policy.problems import PolicyLoadError, Problem
from agentgov.engine.policy.sources import BUNDLE_SUFFIXES, PolicySources, merge_data, read_root, set_schema


def discover(paths: Iterable[str | Path]) -> PolicySources:
    """Read every policy file below `paths`. Raises PolicyLoadError listing all problems found."""
    found = PolicySources()
    problems: list[Problem] = []
    for root in paths:
        root = Path(root)
        if not root.exists():
            problems.append(Problem(str(root), 0, 0, "no such file or directory", "load_error"))
            continue
        if root.is_file() and root.name.endswith(BUNDLE_SUFFIXES):
            _add_bundle(found, root, problems)
            continue
        read_root(root, found, problems)
    if problems:
        raise PolicyLoadError(problems)
    return found


def _add_bundle(found: PolicySources, path: Path, problems: list[Problem]) -> None:
    """A bundle file named where a folder could be: its contents join the sources as if read from disk."""
    try:
        loaded = load_bundle(path)
    except PolicyLoadError as exc:
        problems.extend(exc.problems)
        return
    found.rego.extend(loaded.sources.rego)
    found.cedar.extend(loaded.sources.cedar)
    if loaded.sources.cedar_schema is not None:
        set_schema(found, loaded.sources.cedar_schema, problems)
    merge_data(found.data, loaded.sources.data, str(path), [], problems)
    revision = loaded.manifest.revision if loaded.manifest else ""
    found.bundles.append((revision, loaded.digest))
