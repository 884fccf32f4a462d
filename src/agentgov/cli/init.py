"""`agentgov init DIR`: a policy folder of your own that builds on the shipped library.

It writes a starter policy that keeps the MCP session working (handshake, pings, listings) and
adds one grant, the library pieces it imports, copied from the shipped library (so the folder is
whole for `agentgov test`, `agentgov build` and real OPA alike), a case file and a README. The
library pieces are copied, not written here: one source, the library's own tested files.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from agentgov.cli.output import EXIT_ERROR
from agentgov.engine.policy.library import shipped_library

STARTER_REGO = """\
# Your policy. It builds on agentgov's library (lib/agentgov_lib.rego, package agentgov.lib), copied
# here by `agentgov init`: the MCP session every client needs, and the refusals that hold whatever
# you grant (an unknown caller, a secret in the request, an exhausted budget).
package agentgov

import data.agentgov.lib
import rego.v1

default allow := false

# MCP handshake, pings, notifications and listings (tools/list answers are filtered per tool).
allow if lib.session

# Your grants. An example: interns may search the web.
allow if {
\t"intern" in input.subject.roles
\tinput.resource.id == "search.web"
}

decision := lib.answer(allow, lib.denials)
"""

STARTER_CEDAR = """\
// Your policy. lib.cedar (copied by `agentgov init` from agentgov's library) permits the MCP session
// every client needs and forbids what holds whatever you permit; Cedar's forbid always wins.

// Your grants. An example: interns may search the web.
@id("intern_search")
permit (principal, action == Action::"tool.call", resource)
when { principal.roles.contains("intern") && context.action_name == "search.web" };
"""

CASES = """\
# Cases for your policy: `agentgov test .` runs them on every engine in this folder.
defaults:
  request:
    subject: {id: ivy, roles: [intern], tenant: acme, authenticated: true}
cases:
  - name: the MCP handshake works for any authenticated caller
    request:
      action: {kind: mcp.session, name: initialize}
      resource: {type: server, id: mcp}
    expect: {allow: true}
  - name: tools/list works (the answer is filtered per tool)
    request:
      action: {kind: tool.list, name: tools/list}
      resource: {type: server, id: mcp}
    expect: {allow: true}
  - name: an intern may search the web
    request:
      action: {kind: tool.call, name: search.web}
      resource: {type: tool, id: search.web}
    expect: {allow: true}
  - name: anything else is denied
    request:
      action: {kind: tool.call, name: crm.export}
      resource: {type: tool, id: crm.export}
    expect: {allow: false, status: 403}
  - name: an unknown caller is a 401
    request:
      subject: {id: anonymous, roles: [], tenant: null, authenticated: false}
      action: {kind: tool.call, name: search.web}
      resource: {type: tool, id: search.web}
    expect: {allow: false, status: 401}
  - name: a secret in the arguments is refused even where the grant allows
    request:
      action: {kind: tool.call, name: search.web}
      resource: {type: tool, id: search.web}
      pii: {findings: [{type: AWS_KEY, count: 1, path: arguments.q, category: secret}]}
    expect: {allow: false, status: 403}
"""

README = """\
# Policies

Written with `agentgov init` ({engine}). What is here:

| file | what |
|---|---|
| {policy} | your policy: edit the grants |
| {lib} | agentgov's library pieces, copied from the shipped library: do not edit, re-run `agentgov init --lib-only .` to update |
{data}| `tests/policy.cases.yaml` | cases: add one for every grant |

    agentgov check .            # what OPA (and agentgov) would refuse, with file and line
    agentgov test .             # the cases, on every engine in this folder
    agentgov up --policies .    # Envoy + agentgov + a demo backend with this policy

Whatever the policy says, agentgov refuses an unknown caller (401), an exhausted budget (429) and a
secret in a request (403 secret_detected): see docs/policies.md in agentgov.
"""

_CEDAR_LIB_IDS = ("session_allowed", "unauthenticated", "secret_detected", "budget_exhausted", "budget_insufficient")


def cedar_library_pieces() -> str:
    """The shipped Cedar library's session permit and its always-on forbids, taken from the library's
    own file by their @id (Cedar has no imports: the pieces are copied whole)."""
    source = (shipped_library() / "cedar" / "agentgov.cedar").read_text(encoding="utf-8")
    blocks = re.split(r"(?m)^(?=@id\()", source)
    wanted = []
    for block in blocks:
        m = re.match(r'@id\("([^"]+)"\)', block)
        if m and m.group(1) in _CEDAR_LIB_IDS:
            # A block runs to its final `;`; comment lines after it belong to the next section.
            wanted.append(block[:block.rindex(";") + 1].rstrip() + "\n")
    missing = set(_CEDAR_LIB_IDS) - {re.match(r'@id\("([^"]+)"\)', b).group(1) for b in wanted}  # type: ignore[union-attr]
    if missing:  # the shipped library renamed a piece: a programming error, caught by the tests
        raise RuntimeError(f"the shipped Cedar library has no {', '.join(sorted(missing))}")
    header = ("// agentgov's Cedar library pieces, copied by `agentgov init` from the shipped library\n"
              "// (agentgov.cedar): the MCP session every client needs, and the forbids that hold whatever\n"
              "// your policy permits. Do not edit; `agentgov init --lib-only .` copies them again.\n\n")
    return header + "\n".join(wanted)


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--engine", type=click.Choice(["rego", "cedar"]), default="rego", show_default=True)
@click.option("--lib-only", is_flag=True, help="Only copy the library pieces again (after upgrading agentgov).")
@click.option("--force", is_flag=True, help="Overwrite files that are already there.")
def init(directory: Path, engine: str, lib_only: bool, force: bool) -> None:
    """Write a policy folder that builds on agentgov's library: a starter policy, the library pieces,
    cases and a README. `agentgov test DIR` passes on what it writes."""
    library = shipped_library()
    files: dict[Path, str] = {}
    if engine == "rego":
        files[Path("lib/agentgov_lib.rego")] = (library / "rego" / "lib.rego").read_text(encoding="utf-8")
        files[Path("agentgov/session/data.yaml")] = \
            (library / "agentgov" / "session" / "data.yaml").read_text(encoding="utf-8")
        policy, lib, data = "policy.rego", "lib/agentgov_lib.rego", \
            "| `agentgov/session/data.yaml` | the MCP session methods (`data.agentgov.session`) |\n"
        starter = STARTER_REGO
    else:
        files[Path("lib.cedar")] = cedar_library_pieces()
        policy, lib, data, starter = "policy.cedar", "lib.cedar", "", STARTER_CEDAR
    if not lib_only:
        files[Path(policy)] = starter
        files[Path("tests/policy.cases.yaml")] = CASES
        files[Path("README.md")] = README.format(engine=engine, policy=f"`{policy}`", lib=f"`{lib}`", data=data)
    existing = [str(directory / p) for p in files if (directory / p).exists()]
    if existing and not (force or lib_only):  # --lib-only replaces the copied pieces, nothing of yours
        click.echo(f"error: {', '.join(existing)} already exist(s): use --force to overwrite", err=True)
        raise SystemExit(EXIT_ERROR)
    for relative, text in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    click.echo(f"wrote {len(files)} file(s) under {directory}; next: agentgov test {directory}")
