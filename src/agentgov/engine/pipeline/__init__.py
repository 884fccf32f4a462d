"""The decision path, one module per stage (docs/architecture.md):

    identity → parse → hooks (before) → policy → hooks (after) → answer

`runner.Governor` composes the stages and is the only thing every door calls. Beside it, not
inside it: `exchange` (ext_proc's later stages of the same exchange), `shadow` (a candidate policy
evaluated on the same inputs) and `swap` (the active policy set and its replacement).

The runner is loaded when first asked for: a command that only needs the pipeline's types (`agentgov
eval`'s input formats) does not import the stages and their libraries (JWT, hooks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentgov.engine.pipeline.types import INPUT_FORMATS, Envelope, GovernorOptions, HookRun, InputFormat, Verdict

if TYPE_CHECKING:
    from agentgov.engine.pipeline.runner import Decider, Governor

__all__ = ["INPUT_FORMATS", "Decider", "Envelope", "Governor", "GovernorOptions", "HookRun", "InputFormat", "Verdict"]


def __getattr__(name: str) -> Any:
    if name in ("Decider", "Governor"):
        return getattr(importlib.import_module(f"{__name__}.runner"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
