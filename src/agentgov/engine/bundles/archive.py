"""OPA bundle archives: write them deterministically, read them strictly.

A bundle is a gzipped tar of `.manifest`, Rego modules, `data.json` files placed by directory (as
`opa build` and OPA's loader place them), optionally `.signatures.json`, and agentgov's Cedar
policies and schema under `cedar/` (OPA's reader skips file types it does not know, so real OPA
loads an agentgov bundle unchanged). Determinism matters: a bundle's digest is its identity in
decisions, audit records and the bundle server's ETag, so the same inputs must give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
from collections.abc import Mapping
from pathlib import Path

from agentgov.engine.policy.problems import PolicyLoadError, Problem

MANIFEST = ".manifest"
SIGNATURES = ".signatures.json"
CEDAR_ROOT = "cedar/"

# Bounds on what a bundle may expand to: a bundle server is an input like any other.
MAX_FILES = 10_000
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024


def bundle_error(where: str, message: str) -> PolicyLoadError:
    return PolicyLoadError([Problem(where, 0, 0, message, "bundle_error")])


def write_archive(files: Mapping[str, bytes]) -> bytes:
    """The tar.gz of `files`, byte-identical for identical input: entries sorted, every timestamp,
    owner and mode fixed, and no file name or time in the gzip header."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            content = files[name]
            info = tarfile.TarInfo("/" + name)  # OPA writes absolute entry names; both readers accept either
            info.size, info.mtime, info.mode = len(content), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def read_archive(source: Path | bytes, where: str = "bundle") -> dict[str, bytes]:
    """The files of a bundle archive by normalised name. Refuses what OPA's reader would treat
    differently or what could escape or exhaust: links, devices, `..`, duplicates, oversize."""
    try:
        blob = source.read_bytes() if isinstance(source, Path) else source
    except OSError as exc:
        raise bundle_error(where, f"cannot read bundle: {exc.strerror or exc}") from None
    files: dict[str, bytes] = {}
    total = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
            for member in tar:
                if member.isdir():
                    continue
                name = _normalise(member.name, where)
                if not member.isreg():
                    raise bundle_error(where, f"{name}: only regular files may be in a bundle (links and "
                                       "devices are refused)")
                if name in files:
                    raise bundle_error(where, f"{name}: appears twice in the archive")
                if len(files) >= MAX_FILES:
                    raise bundle_error(where, f"more than {MAX_FILES} files")
                if member.size > MAX_FILE_BYTES:
                    raise bundle_error(where, f"{name}: {member.size} bytes, over the {MAX_FILE_BYTES} limit")
                total += member.size
                if total > MAX_TOTAL_BYTES:
                    raise bundle_error(where, f"expands past the {MAX_TOTAL_BYTES}-byte limit")
                handle = tar.extractfile(member)
                if handle is None:  # pragma: no cover - isreg() members always have content
                    raise bundle_error(where, f"{name}: unreadable entry")
                files[name] = handle.read()
    except (OSError, EOFError, tarfile.TarError, gzip.BadGzipFile) as exc:
        raise bundle_error(where, f"not a readable .tar.gz bundle: {exc}") from None
    if not files:
        raise bundle_error(where, "the bundle is empty")
    return files


def _normalise(name: str, where: str) -> str:
    clean = posixpath.normpath("/" + name.replace("\\", "/")).lstrip("/")
    if not clean or clean == "." or ".." in name.split("/") or "\x00" in name:
        raise bundle_error(where, f"{name!r}: not a safe path inside a bundle")
    return clean
