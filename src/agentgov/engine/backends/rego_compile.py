"""Compile a Rego policy set for regorus' VM in a child process, for reloads.

regorus' objects belong to the thread that made them, and compiling holds the GIL throughout (114 ms
with a 20,000-tool catalog): on a worker thread it would stall the event loop as much as on the loop
itself. A child process compiles instead, and hands back the program serialized (regorus' own
`serialize_binary`, which carries no data: 15 KB for the shipped library), which the serving
thread deserializes in well under a millisecond.

Run as `python -m agentgov.engine.backends.rego_compile`: JSON on stdin, `{"modules": [[file,
source], …], "data": "<data JSON>", "rule": "data.…"}`; on stdout `OK\\n` and the program's bytes,
or `NO\\n` and why regorus refused to compile it (the interpreter decides then, as at start-up).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

OK, NO = b"OK\n", b"NO\n"


class CompilerUnavailable(Exception):
    """The child could not compile at all (not started, crashed, timed out): compile in process."""


@dataclass(frozen=True)
class Compiled:
    program: bytes | None  # regorus' serialized Program; None when regorus refused to compile
    why: str = ""          # regorus' refusal, for the debug log


def compile_in_child(modules: list[tuple[str, str]], data_json: str, rule: str,
                     timeout_s: float = 120.0) -> Compiled:
    """Blocking (call it from a worker thread): the compiled program, made by a child interpreter."""
    request = json.dumps({"modules": modules, "data": data_json, "rule": rule}).encode()
    try:
        done = subprocess.run([sys.executable, "-m", __name__], input=request, capture_output=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompilerUnavailable(f"{type(exc).__name__}: {exc}") from None
    head, body = done.stdout[:3], done.stdout[3:]
    if done.returncode != 0 or head not in (OK, NO):
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise CompilerUnavailable(tail[0])
    if head == NO:
        return Compiled(None, body.decode(errors="replace"))
    return Compiled(body)


def main() -> int:
    import regorus

    request = json.loads(sys.stdin.buffer.read())
    modules = [(str(file), str(source)) for file, source in request["modules"]]
    try:
        program = regorus.Program.compile_from_modules(request["data"], modules, [request["rule"]])
        blob = bytes(program.serialize_binary())
    except BaseException as exc:  # a Rust panic derives from BaseException: a refusal, like any error
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        why = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        sys.stdout.buffer.write(NO + why.encode())
        return 0
    sys.stdout.buffer.write(OK + blob)
    return 0


if __name__ == "__main__":
    sys.exit(main())
