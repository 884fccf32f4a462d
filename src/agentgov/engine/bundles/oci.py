"""Bundles in an OCI registry, in the layout OPA's OCI downloader reads: one layer of media type
`application/vnd.oci.image.layer.v1.tar+gzip` (the bundle itself) and an image config.

oras-py does the registry protocol (auth challenges, blob uploads, manifests). Its `pull` unpacks
tar+gzip layers, which is not what a bundle wants, so pulling reads the manifest and fetches the
layer blob through the same client, checking its digest and size.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import oras.client
import oras.provider
import requests
import requests.adapters

from agentgov.engine.bundles.archive import MAX_TOTAL_BYTES, bundle_error

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"


REQUEST_TIMEOUT_S = 30.0


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """oras-py sends without a timeout: a registry that accepts the connection and never answers
    would hold a pull (and a bundle poll) forever."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = REQUEST_TIMEOUT_S
        return super().send(request, **kwargs)


# oras-py retries every failed request five times, sleeping 3 + 3**n seconds in between (over two
# minutes in all): a pull of a registry that is down must fail at once, and `serve`'s reloader has
# its own backoff. Its undecorated request method is used instead.
_SEND_ONCE = oras.provider.Registry.do_request.__wrapped__


class _Client(oras.client.OrasClient):  # type: ignore[misc]  # oras-py ships no type hints
    def do_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        response: requests.Response = _SEND_ONCE(self, *args, **kwargs)
        return response


def _client(reference: str, insecure: bool) -> oras.client.OrasClient:
    """A client for the reference's registry. Credentials: AGENTGOV_OCI_USERNAME/_PASSWORD, else a
    docker config file (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: what `docker
    login` and `oras login` write), as other OCI clients read them."""
    host = reference.split("/", 1)[0]
    scheme = _auth_scheme(host, insecure)
    client = _Client(hostname=host, insecure=insecure, auth_backend=scheme)
    for prefix in ("http://", "https://"):
        client.session.mount(prefix, _TimeoutAdapter())
    user, password = os.environ.get("AGENTGOV_OCI_USERNAME"), os.environ.get("AGENTGOV_OCI_PASSWORD")
    if user and password:
        client.auth.set_basic_auth(user, password)
    else:
        # oras-py reads ~/.docker/config.json; DOCKER_CONFIG (a folder) it does not know.
        folder = os.environ.get("DOCKER_CONFIG")
        client.auth.load_configs(client.get_container(reference),
                                 configs=[str(Path(folder) / "config.json")] if folder else None)
    if scheme == "basic" and not getattr(client.auth, "_basic_auth", None):
        raise bundle_error(reference, "the registry asks for credentials: set AGENTGOV_OCI_USERNAME and "
                           "AGENTGOV_OCI_PASSWORD, or log in with `docker login` / `oras login`")
    return client


def _auth_scheme(host: str, insecure: bool) -> str:
    """oras-py's auth backend for the registry's challenge: "basic" for a registry that asks for
    HTTP basic auth (htpasswd: most self-hosted ones), else "token" (the Docker token flow of
    hosted registries). oras-py's token backend cannot answer a basic challenge by itself."""
    try:
        probe = requests.get(f"{'http' if insecure else 'https'}://{host}/v2/", timeout=REQUEST_TIMEOUT_S,
                             allow_redirects=False)
    except requests.RequestException:
        return "token"  # the real request reports the failure, with its context
    challenge = probe.headers.get("WWW-Authenticate", "")
    return "basic" if challenge.split(" ", 1)[0].lower() == "basic" else "token"


def _reference(value: str) -> str:
    ref = value.removeprefix("oci://")
    if "/" not in ref or ref.startswith(("/", "-")):
        raise bundle_error(value, "an OCI reference looks like registry.example.com/policies/agentgov:1.0")
    return ref


def push(reference: str, blob: bytes, *, insecure: bool = False) -> None:
    ref = _reference(reference)
    with tempfile.TemporaryDirectory(prefix="agentgov-oci-") as folder:
        bundle, config = Path(folder) / "bundle.tar.gz", Path(folder) / "config.json"
        bundle.write_bytes(blob)
        config.write_bytes(b"{}")
        try:
            response = _client(ref, insecure).push(
                target=ref, files=[f"{bundle}:{LAYER_MEDIA_TYPE}"], manifest_config=f"{config}:{CONFIG_MEDIA_TYPE}",
                disable_path_validation=True, quiet=True)
        except (requests.RequestException, ValueError, OSError) as exc:
            raise bundle_error(reference, f"cannot push to the registry: {type(exc).__name__}: {exc}") from None
    if response.status_code not in (200, 201):
        raise bundle_error(reference, f"the registry refused the manifest: {response.status_code}")


def pull(reference: str, *, insecure: bool = False) -> bytes:
    pulled = pull_if_changed(reference, "", insecure=insecure)
    if pulled is None:  # cannot happen: nothing is "unchanged" from no known digest
        raise bundle_error(reference, "the registry sent no bundle")
    return pulled[0]


def pull_if_changed(reference: str, known_digest: str, *, insecure: bool = False) -> tuple[bytes, str] | None:
    """The bundle layer and its digest, or None when the layer is still `known_digest` (a poll then
    costs one manifest request)."""
    ref = _reference(reference)
    client = _client(ref, insecure)
    try:
        manifest: dict[str, Any] = client.get_manifest(ref)
        layers = [layer for layer in manifest.get("layers", []) if layer.get("mediaType") == LAYER_MEDIA_TYPE]
        if len(layers) != 1:
            raise bundle_error(reference, f"expected one {LAYER_MEDIA_TYPE} layer, found {len(layers)}")
        layer = layers[0]
        if known_digest and layer.get("digest") == known_digest:
            return None
        size = int(layer.get("size", 0))
        if size > MAX_TOTAL_BYTES:
            raise bundle_error(reference, f"the bundle layer is {size} bytes, over the {MAX_TOTAL_BYTES} limit")
        response: requests.Response = client.get_blob(ref, layer["digest"])
        response.raise_for_status()
        blob: bytes = response.content
    except (requests.RequestException, ValueError, KeyError, OSError) as exc:
        raise bundle_error(reference, f"cannot pull from the registry: {type(exc).__name__}: {exc}") from None
    algorithm, _, digest = str(layer["digest"]).partition(":")
    if algorithm != "sha256" or hashlib.sha256(blob).hexdigest() != digest or len(blob) != size:
        raise bundle_error(reference, "the layer's content does not match its digest")
    return blob, str(layer["digest"])
