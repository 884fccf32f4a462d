"""The decision path, one module per stage (docs/architecture.md):

    identity → parse → hooks (before) → policy → hooks (after) → answer

`runner.Governor` composes the stages and is the only thing every door calls. Beside it, not
inside it: `exchange` (ext_proc's later stages of the same exchange), `shadow` (a candidate policy
evaluated on the same inputs) and `swap` (the active policy set and its replacement).
"""

from agentgov.engine.pipeline.runner import Decider, Governor
from agentgov.engine.pipeline.types import INPUT_FORMATS, Envelope, GovernorOptions, HookRun, InputFormat, Verdict

__all__ = ["INPUT_FORMATS", "Decider", "Envelope", "Governor", "GovernorOptions", "HookRun", "InputFormat", "Verdict"]
