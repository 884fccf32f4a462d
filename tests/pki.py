"""TEST KEYS: a throw-away CA with a server and a client certificate, generated per run (never stored)."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(name: str, issuer: x509.Name | None, signer: ec.EllipticCurvePrivateKey | None,
           ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """TEST KEYS: a throw-away CA and leaf certificates, generated per run."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(signer or key, hashes.SHA256()), key


def make_pki() -> dict[str, bytes]:
    ca, ca_key = _issue("agentgov test CA", None, None, ca=True)
    server, server_key = _issue("localhost", ca.subject, ca_key)
    client, client_key = _issue("envoy-edge", ca.subject, ca_key)
    return {"ca": _pem(ca), "server": _pem(server), "server_key": _key_pem(server_key),
            "client": _pem(client), "client_key": _key_pem(client_key)}


def write_pki(folder: Path) -> dict[str, str]:
    """The same material as files, named as LocalStack.tls_files expects."""
    pki = make_pki()
    folder.mkdir(parents=True, exist_ok=True)
    names = {"ca": "ca", "server_cert": "server", "server_key": "server_key", "client_cert": "client",
             "client_key": "client_key"}
    out = {}
    for role, key in names.items():
        path = folder / f"{role}.pem"
        path.write_bytes(pki[key])
        out[role] = str(path)
    return out
