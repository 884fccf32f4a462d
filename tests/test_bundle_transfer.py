"""`agentgov push` / `agentgov pull` against a real HTTP bundle server on loopback (what OPA's
bundle service API asks of a server: bearer token, ETag, 304) and a real OCI registry (Debian's
docker-registry), and what can go wrong on the way."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agentgov.engine.bundles.bundle import build_bundle, sign_bundle
from tests.bundle_servers import TOKEN, BundleServer, Registry
from tests.conftest import POLICIES
from tests.http_helpers import request

CLI = Callable[..., Result]


@pytest.fixture
def server() -> Iterator[BundleServer]:
    with BundleServer() as running:
        yield running


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "agentgov.tar.gz"
    path.write_bytes(build_bundle([POLICIES]))
    return path


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AGENTGOV_TEST_BUNDLE_TOKEN", TOKEN)
    return "env:AGENTGOV_TEST_BUNDLE_TOKEN"


def test_push_then_pull_gives_the_same_bytes_and_an_unchanged_bundle_is_not_downloaded_again(
        run_cli: CLI, server: BundleServer, bundle: Path, tmp_path: Path, token: str) -> None:
    url = f"{server.url}/bundles/agentgov.tar.gz"
    pushed = run_cli("push", str(bundle), url, "--token", token)
    assert pushed.exit_code == 0, pushed.output
    out = tmp_path / "pulled.tar.gz"
    pulled = run_cli("pull", url, "-o", str(out), "--token", token)
    assert pulled.exit_code == 0, pulled.output
    assert out.read_bytes() == bundle.read_bytes()
    etag = f'"{hashlib.sha256(bundle.read_bytes()).hexdigest()[:16]}"'
    assert f"ETag {etag}" in pulled.output
    again = run_cli("pull", url, "-o", str(out), "--token", token, "--etag", etag)
    assert again.exit_code == 0
    assert "unchanged since" in again.output
    assert server.requests[-1][2].get("If-None-Match") == etag


def test_pull_verifies_before_it_writes(run_cli: CLI, server: BundleServer, bundle: Path, tmp_path: Path,
                                        token: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = tmp_path / "key.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    server.store["/signed.tar.gz"] = sign_bundle(bundle.read_bytes(), private, "RS256")
    server.store["/unsigned.tar.gz"] = bundle.read_bytes()
    out = tmp_path / "out.tar.gz"
    out.write_bytes(b"the last good bundle")
    ok = run_cli("pull", f"{server.url}/signed.tar.gz", "-o", str(out), "--token", token,
                 "--verification-key", str(public))
    assert ok.exit_code == 0, ok.output
    good = out.read_bytes()
    refused = run_cli("pull", f"{server.url}/unsigned.tar.gz", "-o", str(out), "--token", token,
                      "--verification-key", str(public))
    assert refused.exit_code == 1
    assert "not signed" in refused.output
    assert out.read_bytes() == good  # a refused download never replaces what was there


@pytest.mark.parametrize(("body", "message"), [
    (b"<html>oops</html>", "not a readable .tar.gz bundle"),
    (None, "answered 404"),
])
def test_a_bad_download_is_refused_and_nothing_is_written(run_cli: CLI, server: BundleServer, tmp_path: Path,
                                                          token: str, body: bytes | None, message: str) -> None:
    if body is not None:
        server.store["/b.tar.gz"] = body
    out = tmp_path / "out.tar.gz"
    result = run_cli("pull", f"{server.url}/b.tar.gz", "-o", str(out), "--token", token)
    assert result.exit_code == 1
    assert message in result.output
    assert not out.exists()


def test_a_wrong_token_or_no_server_is_a_clear_error(run_cli: CLI, server: BundleServer, bundle: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTGOV_TEST_BUNDLE_TOKEN", "wrong")
    refused = run_cli("push", str(bundle), f"{server.url}/b.tar.gz", "--token", "env:AGENTGOV_TEST_BUNDLE_TOKEN")
    assert refused.exit_code == 1
    assert "refused the upload: 401" in refused.output
    assert server.store == {}
    with BundleServer() as gone:
        url = gone.url
    down = run_cli("pull", f"{url}/b.tar.gz", "-o", str(tmp_path / "x.tar.gz"))
    assert down.exit_code == 1
    assert "cannot reach the bundle server" in down.output


def test_push_refuses_a_file_agentgov_would_not_load(run_cli: CLI, server: BundleServer, tmp_path: Path,
                                                     token: str) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a bundle")
    result = run_cli("push", str(junk), f"{server.url}/junk.tar.gz", "--token", token)
    assert result.exit_code == 1
    assert "not a readable .tar.gz bundle" in result.output
    assert server.store == {}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def test_push_and_pull_through_a_real_oci_registry_in_opas_layout(run_cli: CLI, registry: Registry, bundle: Path,
                                                                  tmp_path: Path) -> None:
    ref = f"oci://127.0.0.1:{registry.port}/policies/agentgov:1.0"
    pushed = run_cli("push", str(bundle), ref, "--insecure")
    assert pushed.exit_code == 0, pushed.output
    out = tmp_path / "pulled.tar.gz"
    pulled = run_cli("pull", ref, "-o", str(out), "--insecure")
    assert pulled.exit_code == 0, pulled.output
    assert out.read_bytes() == bundle.read_bytes()
    # OPA's OCI downloader reads the one layer of this media type, under an image config
    status, _, body = request(f"http://127.0.0.1:{registry.port}/v2/policies/agentgov/manifests/1.0", "GET",
                              headers={"accept": "application/vnd.oci.image.manifest.v1+json"})
    manifest = json.loads(body)
    assert status == 200
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    assert manifest["layers"][0]["digest"] == "sha256:" + hashlib.sha256(bundle.read_bytes()).hexdigest()


def test_oci_errors_are_clear_and_write_nothing(run_cli: CLI, registry: Registry, tmp_path: Path) -> None:
    out = tmp_path / "x.tar.gz"
    missing = run_cli("pull", f"oci://127.0.0.1:{registry.port}/policies/none:1.0", "-o", str(out), "--insecure")
    assert missing.exit_code == 1
    assert "cannot pull from the registry" in missing.output
    bad_ref = run_cli("pull", "oci://agentgov", "-o", str(out))
    assert bad_ref.exit_code == 1
    assert "an OCI reference looks like" in bad_ref.output
    assert not out.exists()


OCI_USER, OCI_PASSWORD = "ci", "test-password-not-a-secret"  # marked test credentials


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("private-registry"), credentials=(OCI_USER, OCI_PASSWORD)) as running:
        yield running


def test_an_authenticating_registry_takes_credentials_from_the_environment_or_a_docker_config(
        run_cli: CLI, private_registry: Registry, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = f"oci://127.0.0.1:{private_registry.port}/policies/agentgov:1.0"
    monkeypatch.delenv("AGENTGOV_OCI_USERNAME", raising=False)
    monkeypatch.delenv("AGENTGOV_OCI_PASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.docker/config.json of the machine's
    refused = run_cli("push", str(bundle), ref, "--insecure")
    assert refused.exit_code == 1
    assert "the registry asks for credentials" in refused.output
    monkeypatch.setenv("AGENTGOV_OCI_USERNAME", OCI_USER)
    monkeypatch.setenv("AGENTGOV_OCI_PASSWORD", "wrong-password")
    wrong = run_cli("push", str(bundle), ref, "--insecure")
    assert wrong.exit_code == 1
    assert "UNAUTHORIZED" in wrong.output, wrong.output
    monkeypatch.setenv("AGENTGOV_OCI_PASSWORD", OCI_PASSWORD)
    pushed = run_cli("push", str(bundle), ref, "--insecure")
    assert pushed.exit_code == 0, pushed.output
    monkeypatch.delenv("AGENTGOV_OCI_USERNAME")
    monkeypatch.delenv("AGENTGOV_OCI_PASSWORD")
    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(f"{OCI_USER}:{OCI_PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {f"127.0.0.1:{private_registry.port}": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    out = tmp_path / "pulled.tar.gz"
    pulled = run_cli("pull", ref, "-o", str(out), "--insecure")
    assert pulled.exit_code == 0, pulled.output
    assert out.read_bytes() == bundle.read_bytes()
