"""Policy bundles: deterministic builds in OPA's format, OPA's signature scheme both ways, strict
reading, and a bundle deciding exactly as the folder it was built from (on agentgov and real OPA)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentgov.engine.bundles import archive
from agentgov.engine.bundles.archive import read_archive, write_archive
from agentgov.engine.bundles.bundle import build_bundle, load_bundle, sign_bundle
from agentgov.engine.bundles.signing import VerificationKey, sign, verify
from agentgov.engine.config import build_governor, load_config
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.testing.cases import CaseRunner, load_cases
from tests.conftest import POLICIES
from tests.opa_oracle import RealOpaBackend

CLI = Callable[..., Result]


def _rsa() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pems(key)


def _ec() -> tuple[bytes, bytes]:
    return _pems(ec.generate_private_key(ec.SECP256R1()))


def _pems(key: Any) -> tuple[bytes, bytes]:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, bytes]:
    return _rsa()


@pytest.fixture(scope="module")
def library_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "agentgov.tar.gz"
    path.write_bytes(build_bundle([POLICIES]))
    return path


def _members(blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {m.name: m for m in tar.getmembers()}


# --- building -----------------------------------------------------------------------------------

def test_building_twice_gives_identical_bytes_even_from_a_copy_with_new_timestamps(
        run_cli: CLI, tmp_path: Path, policies_copy: Path) -> None:
    for path in policies_copy.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    first, second, third = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz", tmp_path / "c.tar.gz"
    assert run_cli("build", str(POLICIES), "-o", str(first)).exit_code == 0
    assert run_cli("build", str(POLICIES), "-o", str(second)).exit_code == 0
    assert run_cli("build", str(policies_copy), "-o", str(third)).exit_code == 0
    assert first.read_bytes() == second.read_bytes() == third.read_bytes()


def test_a_bundle_has_opas_layout(library_bundle: Path) -> None:
    blob = library_bundle.read_bytes()
    members = _members(blob)
    assert set(members) == {"/.manifest", "/rego/agentgov.rego", "/rego/lib.rego", "/agentgov/catalog/data.json",
                            "/agentgov/session/data.json", "/cedar/cedar/agentgov.cedar",
                            "/cedar/cedar/agentgov.cedarschema"}  # tests and case files are not shipped
    assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members.values())
    files = read_archive(blob)
    manifest = json.loads(files[".manifest"])
    assert manifest["roots"] == ["agentgov"]
    assert manifest["rego_version"] == 1
    assert len(manifest["revision"]) == 16
    # YAML data became JSON at its folder's path, as `opa build` places data
    source = yaml.safe_load((POLICIES / "agentgov" / "catalog" / "data.yaml").read_text())
    assert json.loads(files["agentgov/catalog/data.json"]) == source


def test_the_revision_follows_the_content(policies_copy: Path) -> None:
    before = json.loads(read_archive(build_bundle([policies_copy]))[".manifest"])["revision"]
    rego = policies_copy / "rego" / "agentgov.rego"
    rego.write_text(rego.read_text() + "\n# a comment\n")
    after = json.loads(read_archive(build_bundle([policies_copy]))[".manifest"])["revision"]
    named = json.loads(read_archive(build_bundle([policies_copy], revision="v7"))[".manifest"])["revision"]
    assert before != after
    assert named == "v7"


def test_the_build_runs_check_and_test_first_and_writes_nothing_when_they_fail(
        run_cli: CLI, tmp_path: Path, policies_copy: Path) -> None:
    out = tmp_path / "b.tar.gz"
    cases = policies_copy / "tests" / "library.cases.yaml"
    cases.write_text(cases.read_text().replace("allow: true", "allow: false", 1))
    failed = run_cli("build", str(policies_copy), "-o", str(out))
    assert failed.exit_code == 2
    assert "policy tests fail" in failed.output
    assert not out.exists()
    assert run_cli("build", str(policies_copy), "-o", str(out), "--no-test").exit_code == 0

    (policies_copy / "rego" / "broken.rego").write_text("package agentgov\n\nallow if {\n")
    out.unlink()
    broken = run_cli("build", str(policies_copy), "-o", str(out), "--no-test")
    assert broken.exit_code == 1
    assert "broken.rego" in broken.output
    assert not out.exists()


def test_the_definition_in_bundles_builds_the_library(run_cli: CLI, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(POLICIES.parent)
    out = tmp_path / "b.tar.gz"
    result = run_cli("build", "-o", str(out))
    assert result.exit_code == 0, result.output
    manifest = json.loads(read_archive(out.read_bytes())[".manifest"])
    assert manifest["metadata"] == {"name": "agentgov-library"}
    assert manifest["roots"] == ["agentgov"]


@pytest.mark.parametrize(("definition", "message"), [
    ("policies: []\n", "`policies` must list"),
    ("policies: [../p]\nroot: [x]\n", "unknown key(s) root"),
    ("- a\n", "a YAML mapping"),
    ("policies: [p]\nroots: x\n", "`roots` must be a list"),
])
def test_a_bad_bundle_definition_is_a_clear_error(run_cli: CLI, tmp_path: Path, definition: str,
                                                  message: str) -> None:
    path = tmp_path / "def.yaml"
    path.write_text(definition)
    result = run_cli("build", str(path), "-o", str(tmp_path / "b.tar.gz"))
    assert result.exit_code == 1
    assert message in result.output


def test_tests_can_be_shipped_and_their_package_becomes_a_root(policies_copy: Path, tmp_path: Path) -> None:
    path = tmp_path / "b.tar.gz"
    path.write_bytes(build_bundle([policies_copy], include_tests=True))
    loaded = load_bundle(path)
    assert loaded.manifest is not None
    assert loaded.manifest.roots == ("agentgov", "agentgov_test")
    assert any(name.endswith("agentgov_test.rego") for name, _ in loaded.sources.rego)


def test_rego_or_data_under_a_top_level_cedar_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cedar").mkdir()
    (tmp_path / "cedar" / "p.rego").write_text("package agentgov\n")
    with pytest.raises(PolicyLoadError, match="where a bundle keeps Cedar files"):
        build_bundle([tmp_path])


def test_yaml_data_that_json_cannot_hold_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package agentgov\n\nimport rego.v1\n\ndecision := {}\n")
    (tmp_path / "agentgov").mkdir()
    (tmp_path / "agentgov" / "data.yaml").write_text("since: 2026-01-01\n")
    with pytest.raises(PolicyLoadError, match="not representable as bundle JSON"):
        build_bundle([tmp_path])


# --- a bundle decides as its folder does ------------------------------------------------------

def _outcomes(backends: Any, build: Any, data: dict[str, Any]) -> list[tuple[str, list[str]]]:
    cases = [c for f in discover([POLICIES]).case_files for c in load_cases(f, ("rego", "cedar"))]
    outcomes = asyncio.run(CaseRunner(backends, build).run(cases, data, None))
    return [(o.case.name, o.mismatches) for o in outcomes]


def test_the_library_cases_pass_on_the_bundle_with_agentgov_test(run_cli: CLI, library_bundle: Path) -> None:
    result = run_cli("test", str(library_bundle), str(POLICIES / "tests"))
    assert result.exit_code == 0, result.output
    ran = re.search(r"(\d+) passed, 0 failed \((\d+) tests ran across cedar, rego\)", result.output)
    assert ran is not None, result.output
    assert int(ran.group(1)) == int(ran.group(2)) > 90


def test_real_opa_decides_the_bundles_content_as_agentgov_does(library_bundle: Path) -> None:
    loaded = load_bundle(library_bundle)

    def build(data: dict[str, Any]) -> dict[str, RealOpaBackend]:
        return {"rego": RealOpaBackend(loaded.sources.rego, data)}

    outcomes = _outcomes(build(loaded.sources.data), build, loaded.sources.data)
    assert len(outcomes) > 40
    assert [o for o in outcomes if o[1]] == []


def test_serving_a_bundle_stamps_its_revision_on_decisions(tmp_path: Path, library_bundle: Path) -> None:
    target = tmp_path / "agentgov.tar.gz"
    shutil.copy(library_bundle, target)
    (tmp_path / "agentgov.yaml").write_text("policy:\n  engine: rego\n  paths: [agentgov.tar.gz]\n"
                                               "identity:\n  required: false\n")
    governor = build_governor(load_config(tmp_path / "agentgov.yaml"))
    revision = json.loads(read_archive(target.read_bytes())[".manifest"])["revision"]
    digest = hashlib.sha256(target.read_bytes()).hexdigest()[:12]
    assert governor.revision == f"{revision}@sha256:{digest}"


# --- signing and verifying ---------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "HS256"])
def test_sign_then_verify_round_trips(library_bundle: Path, algorithm: str) -> None:
    private, public = {"RS256": _rsa, "ES256": _ec}.get(algorithm, lambda: (b"s" * 32, b"s" * 32))()
    signed = sign_bundle(library_bundle.read_bytes(), private, algorithm, key_id="k1", scope="prod")
    files = read_archive(signed)
    assert verify(files, {"k1": VerificationKey(public, algorithm, "prod")}) == "k1"
    token = json.loads(files[".signatures.json"])["signatures"][0]
    header = json.loads(_b64(token.split(".")[0]))
    payload = json.loads(_b64(token.split(".")[1]))
    assert header["alg"] == algorithm
    assert header["kid"] == "k1"
    assert payload["keyid"] == "k1"
    assert payload["scope"] == "prod"
    assert {f["name"] for f in payload["files"]} == set(files) - {".signatures.json"}
    assert all(f["algorithm"] == "SHA-256" and len(f["hash"]) == 64 for f in payload["files"])


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _tamper(files: dict[str, bytes], how: str) -> dict[str, bytes]:
    files = dict(files)
    if how == "changed":
        files["rego/agentgov.rego"] += b"\n# changed\n"
    elif how == "extra":
        files["rego/extra.rego"] = b"package agentgov.extra\n"
    elif how == "missing":
        del files["agentgov/session/data.json"]
    elif how == "data":
        files["agentgov/session/data.json"] = b'{"x": 1}'
    return files


@pytest.mark.parametrize(("how", "message"), [
    ("changed", "rego/agentgov.rego: digest mismatch"),
    ("extra", "rego/extra.rego: not included in the bundle signature"),
    ("missing", "in the signature but not in the bundle"),
    ("data", "agentgov/session/data.json: digest mismatch"),
])
def test_verify_rejects_any_change(library_bundle: Path, rsa_keys: tuple[bytes, bytes], how: str,
                                   message: str) -> None:
    files = read_archive(sign_bundle(library_bundle.read_bytes(), rsa_keys[0], "RS256"))
    with pytest.raises(PolicyLoadError, match=message):
        verify(_tamper(files, how), {"default": VerificationKey(rsa_keys[1])}, key_id="default")


def test_verify_ignores_whitespace_and_key_order_in_data_as_opa_does(library_bundle: Path,
                                                                     rsa_keys: tuple[bytes, bytes]) -> None:
    files = read_archive(sign_bundle(library_bundle.read_bytes(), rsa_keys[0], "RS256"))
    doc = json.loads(files["agentgov/session/data.json"])
    files["agentgov/session/data.json"] = json.dumps(dict(reversed(list(doc.items()))), indent=4).encode()
    assert verify(files, {"default": VerificationKey(rsa_keys[1])}, key_id="default") == "default"


def test_verify_rejects_the_wrong_key_the_wrong_scope_and_algorithm_confusion(
        library_bundle: Path, rsa_keys: tuple[bytes, bytes]) -> None:
    files = read_archive(sign_bundle(library_bundle.read_bytes(), rsa_keys[0], "RS256", key_id="k1",
                                     scope="prod"))
    other = _rsa()[1]
    with pytest.raises(PolicyLoadError, match="does not verify"):
        verify(files, {"k1": VerificationKey(other, "RS256", "prod")})
    with pytest.raises(PolicyLoadError, match="scope mismatch"):
        verify(files, {"k1": VerificationKey(rsa_keys[1], "RS256", "staging")})
    with pytest.raises(PolicyLoadError, match="'k2' is not configured"):
        verify(files, {"k1": VerificationKey(rsa_keys[1], "RS256", "prod")}, key_id="k2")
    # the classic confusion: a token HMAC-signed with the public key as the secret (built by hand,
    # since pyjwt itself refuses to sign that way) must not pass where RS256 is configured
    token = json.loads(files[".signatures.json"])["signatures"][0]
    header = _b64url(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
    signing_input = f"{header}.{token.split('.')[1]}".encode()
    forged_sig = _b64url(hmac.new(rsa_keys[1], signing_input, hashlib.sha256).digest())
    forged = {**files, ".signatures.json": json.dumps({"signatures": [f"{signing_input.decode()}.{forged_sig}"]}).encode()}
    with pytest.raises(PolicyLoadError, match="does not verify"):
        verify(forged, {"k1": VerificationKey(rsa_keys[1], "RS256", "prod")})


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(("signatures", "message"), [
    (None, "not signed"),
    (b"[]", "not an object with a `signatures` list"),
    (b'{"signatures": []}', "exactly one JWT"),
    (b'{"signatures": ["a.b.c", "d.e.f"]}', "exactly one JWT"),
    (b'{"signatures": ["not-a-jwt"]}', "malformed JWT"),
])
def test_verify_refuses_missing_or_malformed_signatures(library_bundle: Path, rsa_keys: tuple[bytes, bytes],
                                                        signatures: bytes | None, message: str) -> None:
    files = read_archive(library_bundle.read_bytes())
    if signatures is not None:
        files[".signatures.json"] = signatures
    with pytest.raises(PolicyLoadError, match=message):
        verify(files, {"default": VerificationKey(rsa_keys[1])}, key_id="default")


def test_a_signature_over_a_weak_hash_is_refused(rsa_keys: tuple[bytes, bytes]) -> None:
    files = {"p.rego": b"package p\n"}
    payload = {"files": [{"name": "p.rego", "algorithm": "MD5", "hash": hashlib.md5(b"package p\n").hexdigest()}]}  # noqa: S324 - the point
    token = jwt.encode(payload, rsa_keys[0], algorithm="RS256")
    files[".signatures.json"] = json.dumps({"signatures": [token]}).encode()
    with pytest.raises(PolicyLoadError, match="'MD5' is not accepted"):
        verify(files, {"default": VerificationKey(rsa_keys[1])}, key_id="default")


def test_cli_sign_and_verify(run_cli: CLI, tmp_path: Path, library_bundle: Path,
                             rsa_keys: tuple[bytes, bytes]) -> None:
    (tmp_path / "key.pem").write_bytes(rsa_keys[0])
    (tmp_path / "key.pub").write_bytes(rsa_keys[1])
    bundle = tmp_path / "b.tar.gz"
    shutil.copy(library_bundle, bundle)
    unsigned = run_cli("verify", str(bundle), "--verification-key", str(tmp_path / "key.pub"))
    assert unsigned.exit_code == 1
    assert "not signed" in unsigned.output
    assert run_cli("sign", str(bundle), "--signing-key", str(tmp_path / "key.pem"), "--key-id", "ci").exit_code == 0
    ok = run_cli("verify", str(bundle), "--verification-key", str(tmp_path / "key.pub"), "--format", "json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["digest"] == "sha256:" + hashlib.sha256(bundle.read_bytes()).hexdigest()
    other = tmp_path / "other.pub"
    other.write_bytes(_rsa()[1])
    wrong = run_cli("verify", str(bundle), "--verification-key", str(other))
    assert wrong.exit_code == 1
    assert "does not verify" in wrong.output


def test_rsa_signatures_keep_the_build_deterministic(library_bundle: Path, rsa_keys: tuple[bytes, bytes]) -> None:
    blob = library_bundle.read_bytes()
    assert sign_bundle(blob, rsa_keys[0], "RS256") == sign_bundle(blob, rsa_keys[0], "RS256")


def test_a_bad_signing_key_is_a_clear_error(library_bundle: Path) -> None:
    with pytest.raises(PolicyLoadError, match="not an unencrypted PEM private key"):
        sign_bundle(library_bundle.read_bytes(), b"not a key", "RS256")
    with pytest.raises(PolicyLoadError, match="unsupported algorithm"):
        sign({"a": b""}, b"k" * 32, "none")


# --- reading strictly ---------------------------------------------------------------------------

def _raw_tar(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    return gzip.compress(raw.getvalue())


def _symlink() -> tarfile.TarInfo:
    info = tarfile.TarInfo("p.rego")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return info


@pytest.mark.parametrize(("blob", "message"), [
    (_raw_tar([("../escape.rego", b"package x\n")]), "not a safe path"),
    (_raw_tar([_symlink()]), "only regular files"),
    (_raw_tar([("a.rego", b"package a\n"), ("/a.rego", b"package b\n")]), "appears twice"),
    (b"plain text", "not a readable .tar.gz bundle"),
    (gzip.compress(b"\0" * 1024), "the bundle is empty"),
])
def test_unsafe_or_broken_archives_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        read_archive(blob)


def test_an_archive_that_expands_past_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 1000)
    blob = write_archive({"a/data.json": b"{}" + b" " * 600, "b/data.json": b"{}" + b" " * 600})
    with pytest.raises(PolicyLoadError, match="expands past"):
        read_archive(blob)


@pytest.mark.parametrize(("files", "message"), [
    ({"policy.wasm": b"\0asm"}, "Wasm policies cannot be evaluated"),
    ({"notes.txt": b"hi"}, "not a file a policy bundle carries"),
    ({".manifest": b'{"roots": ["other"]}', "p.rego": b"package agentgov\n"}, "outside the manifest roots"),
    ({".manifest": b'{"roots": ["agentgov"]}', "x/data.json": b'{"a": 1}'}, "data.x.a is outside"),
    ({".manifest": b'{"rego_version": 0}'}, "rego_version 0"),
    ({".manifest": b'{"roots": "agentgov"}'}, "roots must be a list"),
    ({".manifest": b"[1]"}, "must be a JSON object"),
    ({"data.json": b"[1]"}, "root data document must be an object"),
    ({"a/data.json": b"{NaN}"}, "unreadable data document"),
    ({"p.rego": b"\xff\xfe"}, "not valid UTF-8"),
])
def test_bundle_contents_agentgov_cannot_read_as_opa_would_are_refused(tmp_path: Path, files: dict[str, bytes],
                                                                       message: str) -> None:
    path = tmp_path / "b.tar.gz"
    path.write_bytes(write_archive(files))
    with pytest.raises(PolicyLoadError, match=message):
        load_bundle(path)


def test_a_broken_bundle_named_in_a_command_is_a_load_error_not_a_traceback(run_cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "b.tar.gz"
    path.write_bytes(b"garbage")
    result = run_cli("check", str(path))
    assert result.exit_code == 1
    assert "not a readable .tar.gz bundle" in result.output


def test_a_mistyped_key_file_is_named(run_cli: CLI, library_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.gz"
    shutil.copy(library_bundle, bundle)
    signed = run_cli("sign", str(bundle), "--signing-key", str(tmp_path / "nope.pem"))
    assert signed.exit_code == 1
    assert "nope.pem: no such key file" in signed.output
    missing_env = run_cli("verify", str(bundle), "--verification-key", "env:AGENTGOV_TEST_NO_SUCH_VAR")
    assert missing_env.exit_code == 1
    assert "AGENTGOV_TEST_NO_SUCH_VAR is not set" in missing_env.output


@pytest.mark.parametrize(("kind", "alg"), [("bundle", "RS256"), ("bundle", "PS256"), ("bundle", "ES256"),
                                           ("bundle", "ES512")])
def test_keygen_makes_bundle_keys_that_sign_and_verify(tmp_path: Path, run_cli: Callable[..., Result], kind: str,
                                                       alg: str) -> None:
    key = tmp_path / "bundle.pem"
    made = run_cli("keygen", "--for", kind, "--out", str(key), "--signing-alg", alg)
    assert made.exit_code == 0, made.output
    assert (key.stat().st_mode & 0o777) == 0o600
    bundle = tmp_path / "b.tar.gz"
    assert run_cli("build", str(POLICIES), "-o", str(bundle), "--signing-key", str(key), "--signing-alg", alg,
                   "--no-test").exit_code == 0
    verified = run_cli("verify", str(bundle), "--verification-key", str(key.with_suffix(".pub.pem")),
                       "--signing-alg", alg)
    assert verified.exit_code == 0, verified.output
    assert run_cli("keygen", "--for", kind, "--out", str(key)).exit_code == 1  # never over an existing key


@pytest.mark.parametrize(("alg", "message"), [
    ("RS256", "this is an Ed25519/Ed448 key (the kind that signs audit checkpoints)"),
    ("ES256", "this is an Ed25519/Ed448 key"),
])
def test_signing_with_the_wrong_kind_of_key_says_which_kind_is_needed(tmp_path: Path, run_cli: Callable[..., Result],
                                                                     alg: str, message: str) -> None:
    audit_key = tmp_path / "audit.pem"
    assert run_cli("keygen", "--for", "audit", "--out", str(audit_key)).exit_code == 0
    bundle = tmp_path / "b.tar.gz"
    assert run_cli("build", str(POLICIES), "-o", str(bundle), "--no-test").exit_code == 0
    result = run_cli("sign", str(bundle), "--signing-key", str(audit_key), "--signing-alg", alg)
    assert result.exit_code == 1
    assert message in result.output
    assert "agentgov keygen --for bundle" in result.output
    ec_key = tmp_path / "ec.pem"
    assert run_cli("keygen", "--for", "bundle", "--out", str(ec_key), "--signing-alg", "ES256").exit_code == 0
    wrong = run_cli("sign", str(bundle), "--signing-key", str(ec_key), "--signing-alg", "RS256")
    assert wrong.exit_code == 1
    assert "RS256 signs with an RSA key" in wrong.output
    curve = run_cli("sign", str(bundle), "--signing-key", str(ec_key), "--signing-alg", "ES384")
    assert "ES384 needs a secp384r1 key; this one is secp256r1" in curve.output
