"""Keep a policy set loaded from a bundle source and current: poll, verify, build, swap.

Each poll asks the source for what is there now (an unchanged bundle costs one request), reads it
strictly, verifies its signature when keys are configured, builds a complete PolicySet and only
then hands it to `activate`, which swaps one reference. Anything that fails on the way leaves the
active set serving and shows in the status (health), the metrics and the log.

The last bundle that was activated is persisted, so a restart while the source is down serves it
(verified again with the keys configured then) instead of refusing everything.

Fetching, unpacking and signature checks run in a thread; the PolicySet is built on the event
loop's thread because regorus engines are bound to the thread that made them (they panic when
used from another). Building the shipped library takes ~20 ms, the only pause a reload causes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from agentgov.engine.bundles.bundle import LoadedBundle, open_bundle
from agentgov.engine.bundles.settings import ReloadSettings
from agentgov.engine.bundles.sources import BundleSource
from agentgov.engine.policy.policy_set import PolicySet, ReloadBuilder
from agentgov.engine.policy.problems import PolicyLoadError, Problem

log = logging.getLogger("agentgov.bundles")

LOADS = Counter("agentgov_bundle_loads_total",
                "Bundle polls by outcome: activated, unchanged, refused (bad bundle or signature), "
                "unreachable (source down), persisted (served from the local copy)", ["bundle", "outcome"])
FAILING = Gauge("agentgov_bundle_failing", "1 while the last poll of a bundle failed (the last good one serves)",
                ["bundle"])
LAST_SUCCESS = Gauge("agentgov_bundle_last_success_timestamp_seconds", "When a poll last succeeded", ["bundle"])
LAST_FAILURE = Gauge("agentgov_bundle_last_failure_timestamp_seconds", "When a poll last failed", ["bundle"])
ACTIVE = Gauge("agentgov_bundle_active_info", "The active revision and digest of each bundle (value 1)",
               ["bundle", "revision", "digest"])


@dataclass
class BundleStatus:
    """What health reports about one bundle."""

    name: str
    source: str
    active_revision: str = ""
    active_digest: str = ""
    active_from: str = ""  # "source" or "persisted"
    activated_at: float | None = None
    last_poll_at: float | None = None
    last_success_at: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    consecutive_failures: int = 0

    @property
    def active(self) -> bool:
        return bool(self.active_digest)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


class BundleReloader:
    def __init__(self, name: str, source: BundleSource, build: ReloadBuilder,
                 activate: Callable[[PolicySet], None], settings: ReloadSettings) -> None:
        self.name, self.source, self.settings = name, source, settings
        # `build` keeps the event loop answering while it works (policy_set.reload_builder).
        self._build, self._activate = build, activate
        self.status = BundleStatus(name, source.where)
        self._tag = ""
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def describe(self) -> dict[str, Any]:
        return self.status.to_dict()

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self) -> bool:
        """Load once (from the source, else the persisted copy) and start polling; True when a
        policy set is active. Polling goes on either way: a source that comes back is picked up."""
        if not await self.poll():
            await self._load_persisted()
        self._task = asyncio.create_task(self._run(), name=f"bundle-{self.name}")
        return self.status.active

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.next_delay())
                return
            except TimeoutError:
                pass
            await self.poll()

    def next_delay(self) -> float:
        """Jittered between the bounds while polls succeed; after failures, exponential backoff from
        the lower bound, capped at the upper one, with jitter (a fleet does not retry in step)."""
        low, high = self.settings.poll_min_s, self.settings.poll_max_s
        failures = self.status.consecutive_failures
        if failures == 0:
            return random.uniform(low, high)  # noqa: S311 (jitter, not a secret)
        ceiling = min(high, low * 2 ** min(failures - 1, 16))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not a secret)

    # --- one poll --------------------------------------------------------------------------------

    async def poll(self) -> bool:
        """Fetch, and activate what changed. True when the active set is current (activated now or
        unchanged); False when the poll failed (the active set, if any, keeps serving)."""
        self.status.last_poll_at = time.time()
        try:
            fetched = await self.source.fetch(self._tag)
        except PolicyLoadError as exc:
            return self._failed("unreachable", exc)
        if fetched.blob is None:
            LOADS.labels(bundle=self.name, outcome="unchanged").inc()
            return self._succeeded()
        try:
            policy_set = await self._load(fetched.blob, self.source.where)
            self._swap(policy_set, "source")
        except PolicyLoadError as exc:
            return self._failed("refused", exc)
        self._tag = fetched.tag
        LOADS.labels(bundle=self.name, outcome="activated").inc()
        self._succeeded()  # the set is active: status and metrics say so before the copy is written
        await asyncio.to_thread(self._persist, fetched.blob, fetched.tag)
        return True

    async def _load(self, blob: bytes, where: str) -> PolicySet:
        s = self.settings
        loaded: LoadedBundle = await asyncio.to_thread(open_bundle, blob, where, s.keys, key_id=s.key_id,
                                                       scope=s.scope)
        revision = loaded.manifest.revision if loaded.manifest else ""
        return await self._build(loaded.sources, revision, loaded.digest, blob, where)

    def _swap(self, policy_set: PolicySet, origin: str) -> None:
        old = (self.status.active_revision, self.status.active_digest)
        try:
            self._activate(policy_set)
        except ValueError as exc:  # a hook refused the set's data (e.g. malformed budget caps)
            raise PolicyLoadError([Problem(policy_set.source, 0, 0, str(exc), "bundle_error")]) from None
        if old[1]:
            ACTIVE.remove(self.name, *old)
        ACTIVE.labels(bundle=self.name, revision=policy_set.revision, digest=policy_set.digest).set(1)
        self.status.active_revision, self.status.active_digest = policy_set.revision, policy_set.digest
        self.status.active_from, self.status.activated_at = origin, time.time()
        log.info("bundle %s: activated revision %r (sha256:%s) from %s", self.name, policy_set.revision,
                 policy_set.digest[:12], origin if origin == "persisted" else self.source.where)

    def _succeeded(self) -> bool:
        self.status.last_success_at = time.time()
        self.status.consecutive_failures = 0
        FAILING.labels(bundle=self.name).set(0)
        LAST_SUCCESS.labels(bundle=self.name).set(self.status.last_success_at)
        return True

    def _failed(self, outcome: str, exc: PolicyLoadError) -> bool:
        why = "; ".join(p.message for p in exc.problems[:3]) or "unknown error"
        self.status.last_error, self.status.last_error_at = f"{outcome}: {why}", time.time()
        self.status.consecutive_failures += 1
        LOADS.labels(bundle=self.name, outcome=outcome).inc()
        FAILING.labels(bundle=self.name).set(1)
        LAST_FAILURE.labels(bundle=self.name).set(self.status.last_error_at)
        serving = f"revision {self.status.active_revision!r} keeps serving" if self.status.active \
            else "no policy is loaded: every check is refused"
        log.warning("bundle %s: %s from %s (%s); %s", self.name, outcome, self.source.where, why, serving)
        return False

    # --- the persisted last good bundle ----------------------------------------------------------

    def _paths(self) -> tuple[Path, Path] | None:
        folder = self.settings.persist_dir
        return (folder / f"{self.name}.tar.gz", folder / f"{self.name}.json") if folder else None

    def _persist(self, blob: bytes, tag: str) -> None:
        """Atomically (write, fsync, rename): a crash mid-write never leaves a torn copy to start from.
        A failure to persist is logged, not fatal: the bundle is active, only a restart loses it."""
        paths = self._paths()
        if paths is None:
            return
        try:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            meta = json.dumps({"source": self.source.where, "tag": tag, "sha256": hashlib.sha256(blob).hexdigest(),
                               "saved_at": time.time()}).encode()
            for path, content in ((paths[0], blob), (paths[1], meta)):
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
                try:
                    with os.fdopen(fd, "wb") as out:
                        out.write(content)
                        out.flush()
                        os.fsync(out.fileno())
                    os.replace(tmp, path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        except OSError as exc:
            log.warning("bundle %s: cannot persist the active bundle in %s: %s", self.name, paths[0].parent,
                        exc.strerror or exc)

    async def _load_persisted(self) -> None:
        paths = self._paths()
        if paths is None or not paths[0].is_file():
            return
        try:
            meta = json.loads(paths[1].read_text(encoding="utf-8")) if paths[1].is_file() else {}
            if meta.get("source") not in (None, self.source.where):
                log.warning("bundle %s: the persisted copy came from %s, not %s; not used", self.name,
                            meta.get("source"), self.source.where)
                return
            blob = paths[0].read_bytes()
            policy_set = await self._load(blob, str(paths[0]))
            self._swap(policy_set, "persisted")
        except (OSError, ValueError) as exc:
            log.warning("bundle %s: cannot read the persisted copy: %s", self.name, exc)
            return
        except PolicyLoadError as exc:
            LOADS.labels(bundle=self.name, outcome="refused").inc()
            log.warning("bundle %s: the persisted copy is refused: %s", self.name,
                        "; ".join(p.message for p in exc.problems[:3]))
            return
        # The tag is trusted only for the copy it was written with (a crash between the two renames
        # could pair them wrongly): otherwise the next poll downloads in full.
        self._tag = str(meta.get("tag") or "") if meta.get("sha256") == policy_set.digest else ""
        LOADS.labels(bundle=self.name, outcome="persisted").inc()
