"""Assemble the configured hooks: built-ins and third-party plugins from the entry-point group
`agentgov.hooks`, in the order agentgov.yaml gives, each checked against the hook interface.

Why not pluggy: its calls are synchronous, its order is implicit (registration order, tweaked by
`tryfirst`/`trylast`), and a hook's failure mode and timeout have no place in it. Here a hook is a
small object with a declared name, phases and failure mode, and the runner awaits the hooks one by
one in the order the operator wrote down (docs/hooks.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from agentgov.engine.hooks.base import (
    ENTRY_POINT_GROUP,
    FAILURE_MODES,
    HOOK_METHODS,
    After,
    Before,
    CheckPolicyData,
    Close,
    Hook,
    RecordShadow,
    Respond,
    Rewrite,
    Settle,
    Start,
    interface_problems,
)
from agentgov.engine.keys import unknown_keys

HookFactory = Callable[[Mapping[str, Any]], Any]
_ENTRY_KEYS = {"name", "failure_mode", "timeout_s", "options"}
DEFAULT_PLUGIN_TIMEOUT_S = 0.5


class HookLoadError(ValueError):
    """A hook that cannot be used: the message names the entry and the plugin."""


@dataclass(frozen=True)
class HookSlot:
    """A hook as configured, with its methods bound once at load time (after `interface_problems`
    checked them against the declared contract). The runner calls these; a None is a method the
    hook does not have, or a phase it did not declare."""

    hook: Hook
    failure_mode: str
    timeout_s: float | None
    origin: str = "built-in"  # or "<distribution> <version>" for a plugin
    before: Before | None = None
    after: After | None = None
    rewrite: Rewrite | None = None
    response: Respond | None = None
    start: Start | None = None
    close: Close | None = None
    check_policy_data: CheckPolicyData | None = None
    settle: Settle | None = None
    record_shadow: RecordShadow | None = None

    @property
    def name(self) -> str:
        return self.hook.name


def bind(hook: Hook, failure_mode: str | None = None, timeout_s: float | None = None, *,
         origin: str = "built-in", use_default_timeout: bool = True) -> HookSlot:
    """The one way a hook becomes a slot, built-in or plugin: checked against the contract, then its
    methods bound. `failure_mode`/`timeout_s` override the hook's own declarations."""
    problems = interface_problems(hook)
    if problems:
        what = f"built-in hook {getattr(hook, 'name', '?')!r}" if origin == "built-in" else \
            f"hook {getattr(hook, 'name', '?')!r} ({origin})"
        raise HookLoadError(f"{what} does not satisfy the hook interface: " + "; ".join(problems))
    phases = hook.phases
    methods: dict[str, Any] = {}
    for spec in HOOK_METHODS:
        if spec.phase is not None and spec.phase not in phases:
            continue
        method = getattr(hook, spec.name, None)  # the one lookup by name: checked above
        if method is not None:
            methods[spec.name] = method
    timeout = timeout_s if timeout_s is not None or not use_default_timeout else hook.timeout_s
    return HookSlot(hook, failure_mode or hook.failure_mode, timeout, origin, **methods)


def installed_plugins() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def assemble(entries: Any, builtins: Mapping[str, Hook]) -> list[HookSlot]:
    """`entries` is the `hooks:` list of agentgov.yaml (or None). Enabled built-ins that it does not
    name run first, in their default order; then every listed hook, in the listed order."""
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise HookLoadError("`hooks` must be a list of {name, failure_mode?, timeout_s?, options?}")
    named = [e.get("name") if isinstance(e, dict) else None for e in entries]
    slots = [bind(h) for n, h in builtins.items() if n not in named]
    plugins: dict[str, metadata.EntryPoint] | None = None
    seen: set[str] = {s.name for s in slots}
    for i, entry in enumerate(entries):
        where = f"hooks[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise HookLoadError(f"{where} must be a mapping with a `name`")
        problem = unknown_keys(entry, _ENTRY_KEYS)
        if problem:
            raise HookLoadError(f"{where}: {problem}")
        name: str = entry["name"]
        if name in seen:
            raise HookLoadError(f"{where}: hook {name!r} is listed twice")
        seen.add(name)
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise HookLoadError(f"{where}: `options` must be a mapping")
        if name in builtins:
            if options:
                raise HookLoadError(f"{where}: the built-in hook {name!r} is configured in its own section, "
                                    "not with `options`")
            hook, origin = builtins[name], "built-in"
        else:
            if plugins is None:
                plugins = installed_plugins()
            hook, origin = _load_plugin(where, name, options, plugins)
        failure_mode = entry.get("failure_mode", hook.failure_mode)
        if failure_mode not in FAILURE_MODES:
            raise HookLoadError(f"{where}: failure_mode must be deny or allow")
        default_timeout = hook.timeout_s if origin == "built-in" else hook.timeout_s or DEFAULT_PLUGIN_TIMEOUT_S
        timeout = entry.get("timeout_s", default_timeout)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
            raise HookLoadError(f"{where}: timeout_s must be a positive number")
        slots.append(bind(hook, str(failure_mode), float(timeout) if timeout is not None else None, origin=origin,
                          use_default_timeout=False))
    return slots


def _load_plugin(where: str, name: str, options: Mapping[str, Any],
                 plugins: Mapping[str, metadata.EntryPoint]) -> tuple[Hook, str]:
    ep = plugins.get(name)
    if ep is None:
        installed = ", ".join(sorted(plugins)) or "none"
        raise HookLoadError(f"{where}: no hook named {name!r} is installed (entry-point group {ENTRY_POINT_GROUP}; "
                            f"installed: {installed})")
    origin = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else ep.value
    try:
        factory = ep.load()
    except Exception as exc:  # a plugin's import error is a start-up error naming the plugin
        raise HookLoadError(f"{where}: hook {name!r} ({origin}, {ep.value}) cannot be imported: "
                            f"{type(exc).__name__}: {exc}") from None
    try:
        hook = factory(dict(options))
    except Exception as exc:
        raise HookLoadError(f"{where}: hook {name!r} ({origin}) refused its options: {type(exc).__name__}: {exc}") from None
    problems = interface_problems(hook)
    if problems:
        raise HookLoadError(f"{where}: hook {name!r} ({origin}, {ep.value}) does not satisfy the hook interface: "
                            + "; ".join(problems))
    if getattr(hook, "name", None) != name:
        raise HookLoadError(f"{where}: the entry point {name!r} ({origin}) made a hook that calls itself {hook.name!r}")
    return hook, origin
