"""`agentgov build`, `sign`, `verify`, `push`, `pull`: OPA-compatible policy bundles.

Exit codes follow the CLI contract: 0 success, 1 a load, check or verification error, 2 failing
policy tests (the build stops before writing anything).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import click
import yaml

from agentgov.cli.output import EXIT_ERROR, EXIT_FAILED, FORMAT_PRETTY_JSON, report_problems
from agentgov.engine.bundles import oci, remote
from agentgov.engine.bundles.archive import read_archive
from agentgov.engine.bundles.bundle import build_bundle, load_bundle, sign_bundle
from agentgov.engine.bundles.signing import ALGORITHMS, VerificationKey, key_material
from agentgov.engine.bundles.signing import verify as verify_signature
from agentgov.engine.keys import unknown_keys
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.library import check_sources, default_policy_path
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.testing.report import render_pretty
from agentgov.engine.testing.suite import run_suite

_DEFINITION_KEYS = {"policies", "roots", "revision", "metadata", "include_tests"}
_ALG = click.Choice(ALGORITHMS)


class BundleDefinition:
    """A bundle definition file in `bundles/`: which policy folders, roots, revision and metadata."""

    def __init__(self, policies: list[Path], roots: tuple[str, ...] = (), revision: str = "",
                 metadata: dict[str, Any] | None = None, include_tests: bool = False) -> None:
        self.policies, self.roots, self.revision = policies, roots, revision
        self.metadata, self.include_tests = metadata, include_tests

    @classmethod
    def read(cls, path: Path) -> BundleDefinition:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise click.ClickException(f"{path}: cannot read the bundle definition: {exc}") from None
        if not isinstance(doc, dict):
            raise click.ClickException(f"{path}: a bundle definition is a YAML mapping")
        problem = unknown_keys(doc, _DEFINITION_KEYS)
        if problem:
            raise click.ClickException(f"{path}: {problem}")
        policies = doc.get("policies")
        if not (isinstance(policies, list) and policies and all(isinstance(p, str) for p in policies)):
            raise click.ClickException(f"{path}: `policies` must list the policy folders (relative to this file)")
        roots = doc.get("roots", [])
        metadata = doc.get("metadata")
        if not (isinstance(roots, list) and all(isinstance(r, str) for r in roots)):
            raise click.ClickException(f"{path}: `roots` must be a list of strings")
        if metadata is not None and not isinstance(metadata, dict):
            raise click.ClickException(f"{path}: `metadata` must be a mapping")
        return cls([path.parent / p for p in policies], tuple(roots), str(doc.get("revision", "")),
                   metadata, bool(doc.get("include_tests", False)))


def _definition(source: str | None) -> BundleDefinition:
    if source is None:
        default = Path("bundles/agentgov.yaml")
        return BundleDefinition.read(default) if default.is_file() else BundleDefinition([default_policy_path()])
    path = Path(source)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return BundleDefinition.read(path)
    if path.is_dir():
        return BundleDefinition([path])
    raise click.ClickException(f"{source}: neither a bundle definition (.yaml) nor a policy folder")


@click.command()
@click.argument("source", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="bundle.tar.gz", show_default=True)
@click.option("--revision", default="", help="Manifest revision (default: the definition's, else a content digest).")
@click.option("--root", "roots", multiple=True, help="Manifest root (repeatable; default: what the policies own).")
@click.option("--no-check", is_flag=True, help="With --no-test, skip `agentgov check` too (the tests check the "
              "policies before they run).")
@click.option("--no-test", is_flag=True, help="Skip `agentgov test` before building.")
@click.option("--signing-key", help="Sign with this key: a PEM file, env:NAME, or an HMAC secret.")
@click.option("--signing-alg", type=_ALG, default="RS256", show_default=True)
@click.option("--key-id", default="", help="Key id written to the signature (kid).")
@click.option("--scope", default="", help="Scope claim written to the signature.")
def build(source: str | None, output: str, revision: str, roots: tuple[str, ...], no_check: bool, no_test: bool,
          signing_key: str | None, signing_alg: str, key_id: str, scope: str) -> None:
    """Build an OPA bundle (.tar.gz) from a bundle definition in bundles/ or a policy folder
    (default: bundles/agentgov.yaml, else the shipped library). The same inputs give the same bytes."""
    definition = _definition(source)
    paths = [str(p) for p in definition.policies]
    try:
        if no_test and not no_check:  # run_suite checks the policies before it tests them
            problems = check_sources(discover(paths))
            if problems:
                raise PolicyLoadError(problems)
        if not no_test:
            report = run_suite(paths)
            if not report.ok:
                click.echo(render_pretty(report, verbose=False))
                click.echo("error: policy tests fail; nothing was built (--no-test skips them)", err=True)
                raise SystemExit(EXIT_FAILED)
        blob = build_bundle(definition.policies, revision=revision or definition.revision,
                            bundle_roots=roots or definition.roots, metadata=definition.metadata,
                            include_tests=definition.include_tests)
        if signing_key:
            blob = sign_bundle(blob, _key(signing_key, signing_alg), signing_alg, key_id=key_id, scope=scope)
    except PolicyLoadError as exc:
        report_problems(exc, "pretty")
        raise SystemExit(EXIT_ERROR) from None
    _write_atomically(Path(output), blob)
    click.echo(f"built {output} ({len(blob)} bytes{', signed' if signing_key else ''})")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--signing-key", required=True, help="A PEM private key file, env:NAME, or an HMAC secret.")
@click.option("--signing-alg", type=_ALG, default="RS256", show_default=True)
@click.option("--key-id", default="", help="Key id (kid) for verifiers to pick the key by.")
@click.option("--scope", default="")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (default: in place).")
def sign(bundle: str, signing_key: str, signing_alg: str, key_id: str, scope: str, output: str | None) -> None:
    """Sign a bundle: add (or replace) OPA's .signatures.json."""
    try:
        blob = sign_bundle(Path(bundle).read_bytes(), _key(signing_key, signing_alg), signing_alg, key_id=key_id,
                           scope=scope, where=bundle)
    except PolicyLoadError as exc:
        report_problems(exc, "pretty")
        raise SystemExit(EXIT_ERROR) from None
    _write_atomically(Path(output or bundle), blob)
    click.echo(f"signed {output or bundle}")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--verification-key", required=True, help="A PEM public key or certificate, env:NAME, or an HMAC secret.")
@click.option("--signing-alg", type=_ALG, default="RS256", show_default=True)
@click.option("--key-id", default="default", show_default=True,
              help="The id the key is configured under; as with `opa run --verification-key-id`, it "
                   "takes precedence over the token's kid.")
@click.option("--scope", default="")
@click.option("--format", "fmt", type=FORMAT_PRETTY_JSON, default="pretty", show_default=True)
def verify(bundle: str, verification_key: str, signing_alg: str, key_id: str, scope: str, fmt: str) -> None:
    """Verify a bundle's signature and every file's digest, then load it as `serve` would."""
    try:
        keys = {key_id: VerificationKey(_key(verification_key, signing_alg), signing_alg, scope)}
        loaded = load_bundle(Path(bundle), keys, key_id=key_id)
        problems = check_sources(loaded.sources)
        if problems:
            raise PolicyLoadError(problems)
    except PolicyLoadError as exc:
        report_problems(exc, fmt)
        raise SystemExit(EXIT_ERROR) from None
    revision = loaded.manifest.revision if loaded.manifest else ""
    if fmt == "json":
        click.echo(json.dumps({"verified": True, "key_id": loaded.signed_by, "revision": revision,
                               "digest": f"sha256:{loaded.digest}"}))
    else:
        click.echo(f"ok: {bundle} verified with key {loaded.signed_by!r}, revision {revision!r}, "
                   f"sha256:{loaded.digest}")


def _key(value: str, algorithm: str) -> bytes:
    """Key material, with a plain error for the commonest mistake: a mistyped key file path."""
    if not algorithm.startswith("HS") and not value.startswith("env:") and not Path(value).is_file():
        raise click.ClickException(f"{value}: no such key file ({algorithm} needs a PEM file or env:NAME)")
    return key_material(value)


def _write_atomically(path: Path, blob: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None


def _token(value: str | None) -> str:
    return key_material(value).decode().strip() if value else ""


_INSECURE = click.option("--insecure", is_flag=True,
                         help="oci:// over plain HTTP (a registry on loopback); never for a remote registry.")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.argument("url")
@click.option("--token", help="Bearer token: env:NAME or a file holding it (not the token itself: it would "
                              "show in the process list).")
@_INSECURE
def push(bundle: str, url: str, token: str | None, insecure: bool) -> None:
    """Upload a bundle to an HTTP bundle server (PUT) or an OCI registry (oci://REGISTRY/REPO:TAG,
    credentials from AGENTGOV_OCI_USERNAME/_PASSWORD). The bundle is read strictly first: a file
    agentgov would refuse to load is never shipped."""
    try:
        blob = Path(bundle).read_bytes()
        read_archive(blob, bundle)
        if url.startswith("oci://"):
            oci.push(url, blob, insecure=insecure)
            etag = ""
        else:
            etag = asyncio.run(remote.push(url, blob, token=_token(token)))
    except PolicyLoadError as exc:
        report_problems(exc, "pretty")
        raise SystemExit(EXIT_ERROR) from None
    click.echo(f"pushed {bundle} to {url}" + (f" (ETag {etag})" if etag else ""))


@click.command()
@click.argument("url")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@click.option("--token", help="Bearer token: env:NAME or a file holding it.")
@click.option("--etag", default="", help="Only download when the server's copy differs from this ETag.")
@click.option("--verification-key", help="Verify the signature before writing (PEM file, env:NAME, or HMAC secret).")
@click.option("--signing-alg", type=_ALG, default="RS256", show_default=True)
@click.option("--key-id", default="default", show_default=True)
@click.option("--scope", default="")
@_INSECURE
def pull(url: str, output: str, token: str | None, etag: str, verification_key: str | None, signing_alg: str,
         key_id: str, scope: str, insecure: bool) -> None:
    """Download a bundle as an OPA agent does (GET, bearer token, If-None-Match), or from an OCI
    registry (oci://…). What is written has been read strictly and, with a key, verified: a bad
    download never replaces a good file."""
    try:
        if url.startswith("oci://"):
            pulled = remote.Pulled(oci.pull(url, insecure=insecure), "")
        else:
            pulled = asyncio.run(remote.pull(url, token=_token(token), etag=etag))
        if pulled.blob is None:
            click.echo(f"unchanged since ETag {etag}")
            return
        files = read_archive(pulled.blob, url)
        if verification_key:
            keys = {key_id: VerificationKey(_key(verification_key, signing_alg), signing_alg, scope)}
            verify_signature(files, keys, key_id=key_id, where=url)
    except PolicyLoadError as exc:
        report_problems(exc, "pretty")
        raise SystemExit(EXIT_ERROR) from None
    _write_atomically(Path(output), pulled.blob)
    click.echo(f"pulled {url} to {output} ({len(pulled.blob)} bytes" + (f", ETag {pulled.etag})" if pulled.etag else ")"))
