"""Summaries of py-spy profiles (collapsed stacks) of an agentgov worker, by stage.

py-spy's raw format is one line per distinct stack: `frame;frame;...;leaf count`, each frame
`function (path:line)`. Only samples py-spy counts as active are recorded (no `--idle`).

Event-loop thread: each sample is charged to the stage of the innermost agentgov engine frame on
its stack (a regex inside the PII scanner is PII's, a JSON encode inside the audit record is
audit's); samples with none are the event loop, aiohttp and the interpreter's own (uvloop's C loop
shows as `Runner.run`).

Other threads (the budget store's SQLite writer, the audit log's fsync, the WAL checkpointer) are
summed apart: py-spy counts a thread blocked in `fsync` or a SQLite lock as active, so their share
is wall time spent off the event loop, not CPU the loop lost.
"""

from __future__ import annotations

import re
from collections import Counter

# Innermost agentgov module → stage. Order matters: the first prefix that matches wins.
STAGES: list[tuple[str, str]] = [
    ("engine/hooks/pii/", "PII/secrets scan"),
    ("engine/hooks/budget/", "budget"),
    ("engine/hooks/audit/", "audit record and chain"),
    ("engine/hooks/identity", "identity (JWT)"),
    ("engine/hooks/", "other hooks"),
    ("engine/backends/", "policy engine call"),
    ("engine/policy_input", "policy input"),
    ("engine/protocols/", "request parsing (MCP/LLM)"),
    ("engine/pipeline/", "runner and stages"),
    ("engine/metrics", "metrics"),
    ("engine/telemetry/", "tracing"),
    ("engine/server/", "transport and answers"),
    # engine/worker_thread.py: on the event loop, handing a batch to the budget or audit thread; on
    # those threads, waiting for the next batch (or for the interpreter lock).
    ("engine/worker_thread", "thread hand-off (queue, waiting for work or the interpreter lock)"),
    ("engine/", "other agentgov"),
]
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")


def _is_thread(frames: list[str]) -> bool:
    return any("_bootstrap_inner" in frame or "Thread.run" in frame for frame in frames[:4])


def _stage(frames: list[str]) -> str:
    if _is_thread(frames):
        owner = next((s for f in reversed(frames) for p, s in STAGES if "agentgov/" + p in f),
                     "thread pool between tasks (waiting for work or the interpreter lock)")
        return f"background threads: {owner}"
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        path = match.group("path") if match else frame
        if "agentgov/engine/" in path:  # the CLI's frames (serve, the runner of the loop) are below every stage
            tail = path.split("agentgov/", 1)[1]
            for prefix, stage in STAGES:
                if tail.startswith(prefix):
                    return stage
            return "other agentgov"
    return "event loop, aiohttp, interpreter"


def parse(collapsed: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summary(collapsed: str, top: int = 15) -> str:
    """A plain-text report: samples by stage, then the functions with the most self time."""
    stacks = parse(collapsed)
    total = sum(count for _, count in stacks) or 1
    by_stage: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    for frames, count in stacks:
        by_stage[_stage(frames)] += count
        leaf = frames[-1] if frames else "?"
        by_leaf[re.sub(r":\d+\)$", ")", leaf)] += count
    lines = [f"active samples: {total}", "", "by stage (innermost agentgov frame; background threads apart):"]
    lines += [f"  {100 * n / total:5.1f}%  {stage}" for stage, n in by_stage.most_common()]
    lines += ["", f"top {top} functions by self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {leaf}" for leaf, n in by_leaf.most_common(top)]
    return "\n".join(lines) + "\n"


def stage_shares(collapsed: str) -> dict[str, float]:
    stacks = parse(collapsed)
    total = sum(count for _, count in stacks) or 1
    shares: Counter[str] = Counter()
    for frames, count in stacks:
        shares[_stage(frames)] += count
    return {stage: n / total for stage, n in shares.most_common()}
