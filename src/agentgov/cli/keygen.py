"""`agentgov keygen --for bundle|audit --out FILE`: one command for the keys agentgov signs with.

Bundle keys are what OPA verifies (RSA for RS*/PS*, EC for ES*: OPA has no EdDSA for bundles);
audit keys are Ed25519 (checkpoints of the audit chain). The private key is written with mode 0600
and never over an existing file; the public key goes beside it as `.pub.pem`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentgov.cli.output import EXIT_ERROR

BUNDLE_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_CURVES: dict[str, ec.EllipticCurve] = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}


def new_key(purpose: str, algorithm: str) -> Any:
    if purpose == "audit":
        return Ed25519PrivateKey.generate()
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm])
    return rsa.generate_private_key(65537, 3072)


def write_key(out: Path, key: Any) -> Path:
    """Write the private key (0600, never over an existing file) and its public half beside it."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public = out.with_suffix(".pub.pem")
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return public


@click.command("keygen")
@click.option("--for", "purpose", type=click.Choice(["bundle", "audit"]), required=True,
              help="bundle: sign policy bundles (agentgov build/sign, OPA verifies); audit: sign audit checkpoints.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the private key (PEM); the public key goes beside it as .pub.pem.")
@click.option("--signing-alg", "algorithm", type=click.Choice(BUNDLE_ALGORITHMS), default="RS256", show_default=True,
              help="For bundle keys: the algorithm the key is for (RS*/PS*: RSA 3072; ES*: the matching curve).")
def keygen(purpose: str, out: Path, algorithm: str) -> None:
    """Make a signing key: for bundles (what OPA verifies) or for audit checkpoints (Ed25519)."""
    if out.exists():
        click.echo(f"{out} exists; not overwriting a key", err=True)
        raise SystemExit(EXIT_ERROR)
    public = write_key(out, new_key(purpose, algorithm))
    if purpose == "audit":
        click.echo(f"private key: {out} (audit.checkpoint_key_file)\npublic key: {public} (for auditors: "
                   f"agentgov audit verify DIR --key {public})")
    else:
        click.echo(f"private key: {out} (agentgov build --signing-key {out} --signing-alg {algorithm})\n"
                   f"public key: {public} (policy.bundle.verification in agentgov.yaml, or OPA's keys: "
                   f"{{key: …, algorithm: {algorithm}}})")
