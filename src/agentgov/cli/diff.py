"""`agentgov diff --base OLD --head NEW --inputs SRC`: the CI gate for a policy change.

Exit codes: 0 no change or every change approved, 2 any unapproved change, 1 a load error (either
policy version, the inputs or the approvals file).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from contextlib import ExitStack
from pathlib import Path

import click

from agentgov.cli.output import EXIT_ERROR, EXIT_FAILED, report_problems
from agentgov.engine.backends.base import DecisionBackend
from agentgov.engine.backends.rego import DEFAULT_RULE
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.library import build_backends
from agentgov.engine.policy.problems import PolicyLoadError, Problem
from agentgov.engine.testing.diff import load_approvals, run_diff
from agentgov.engine.testing.diff_report import RENDERERS
from agentgov.engine.testing.replay import read_inputs


def _git_tree(spec: str, stack: ExitStack, default_path: str) -> Path:
    """`git:REF[:PATH]` → a folder holding PATH as it was at REF (via `git archive`, no checkout)."""
    ref, _, path = spec.removeprefix("git:").partition(":")
    path = path or default_path
    where = f"git:{ref}:{path}"
    if not ref or ref.startswith("-"):
        raise PolicyLoadError([Problem(where, 0, 0, "not a git revision", "load_error")])
    top = Path(_git(["rev-parse", "--show-toplevel"], where).decode().strip()).resolve()
    try:
        rel = str(Path(path).resolve().relative_to(top)) if Path(path).exists() else path
    except ValueError:
        raise PolicyLoadError([Problem(where, 0, 0, "the path is outside this git repository", "load_error")]) \
            from None
    archive = _git(["-C", str(top), "archive", "--format=tar", ref, rel], where)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentgov-diff-")))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / rel


def _git(args: list[str], where: str) -> bytes:
    try:
        return subprocess.run(["git", *args], capture_output=True, check=True).stdout
    except FileNotFoundError:
        raise PolicyLoadError([Problem(where, 0, 0, "git is not installed", "load_error")]) from None
    except subprocess.CalledProcessError as exc:
        message = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
        raise PolicyLoadError([Problem(where, 0, 0, f"git: {message or exc}", "load_error")]) from None


def _backends(spec: str, stack: ExitStack, default_path: str, rule: str) -> dict[str, DecisionBackend]:
    path = _git_tree(spec, stack, default_path) if spec.startswith("git:") else Path(spec)
    return build_backends(discover([path]), rule=rule)


@click.command()
@click.option("--base", "base_spec", required=True, help="The current policies: a folder, a bundle, or git:REF[:PATH].")
@click.option("--head", "head_spec", required=True, help="The proposed policies: a folder, a bundle, or git:REF[:PATH].")
@click.option("--inputs", "input_paths", multiple=True, required=True, type=click.Path(),
              help="Case files, policy inputs (.json), agentgov audit logs or OPA decision logs (.jsonl); "
                   "files or folders, repeatable.")
@click.option("--approvals", type=click.Path(dir_okay=False), help="YAML listing the changes that are intended.")
@click.option("--format", "fmt", type=click.Choice(sorted(RENDERERS)), default="pretty", show_default=True)
@click.option("--rule", default=DEFAULT_RULE, show_default=True, help="Rego decision rule.")
def diff(base_spec: str, head_spec: str, input_paths: tuple[str, ...], approvals: str | None, fmt: str,
         rule: str) -> None:
    """Replay inputs through two policy versions and report every changed decision. Exit 2 on any
    change the approvals file does not list."""
    folders = [s for s in (head_spec, base_spec) if not s.startswith("git:") and Path(s).is_dir()]
    default_path = folders[0] if folders else "policies"
    with ExitStack() as stack:
        try:
            base = _backends(base_spec, stack, default_path, rule)
            head = _backends(head_spec, stack, default_path, rule)
            replay = read_inputs([Path(p) for p in input_paths])
            approved = load_approvals(Path(approvals)) if approvals else []
            if not replay.inputs:
                raise PolicyLoadError([Problem(", ".join(input_paths), 0, 0, "no inputs to replay", "input_error")])
            report = run_diff(replay.inputs, base, head, approved, replay.skipped)
        except PolicyLoadError as exc:
            report_problems(exc, "pretty")
            raise SystemExit(EXIT_ERROR) from None
    click.echo(RENDERERS[fmt](report))
    if report.blocking:
        raise SystemExit(EXIT_FAILED)
