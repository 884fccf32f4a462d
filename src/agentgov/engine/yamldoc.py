"""YAML data documents (policy data, bundle data, catalogs), read with libyaml's C loader when PyYAML
has it: the same documents as `yaml.safe_load`, several times faster on a large catalog (the pure
Python loader took 8.9 s on a 20,000-tool catalog, the C loader 3.6 s; docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any

import yaml

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`, on the C loader when it is there (same resolver, same types)."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - CSafeLoader/SafeLoader: the safe loaders only
