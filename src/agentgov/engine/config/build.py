"""From a resolved `Config` to what runs: the policy set, the hooks and the Governor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentgov.engine.approvals.evidence import record
from agentgov.engine.approvals.links import LinkKeyError
from agentgov.engine.approvals.notify import Notifier, Recorder
from agentgov.engine.approvals.settings import ApprovalsConfigError, link_signer
from agentgov.engine.approvals.settings import settings_from_config as approval_settings
from agentgov.engine.approvals.store import Approval
from agentgov.engine.approvals.stores import open_store as open_approval_store
from agentgov.engine.backends.base import DecisionBackend, ResultReader, decision_from_document
from agentgov.engine.backends.envoy_result import decision_from_envoy_result
from agentgov.engine.bundles.bundle import build_bundle
from agentgov.engine.bundles.reloader import BundleReloader
from agentgov.engine.bundles.sources import source_for
from agentgov.engine.config.settings import Config, leading_key
from agentgov.engine.hooks.api_keys import DEFAULT_API_KEY_HEADER, api_keys_from_config
from agentgov.engine.hooks.audit.chain import AuditError
from agentgov.engine.hooks.audit.hook import AuditConfigError, AuditHook
from agentgov.engine.hooks.audit.hook import settings_from_config as audit_settings
from agentgov.engine.hooks.base import Hook
from agentgov.engine.hooks.budget.hook import BudgetHook, open_store
from agentgov.engine.hooks.budget.limits import BudgetConfigError, tenant_caps_from_data
from agentgov.engine.hooks.budget.limits import settings_from_config as budget_settings
from agentgov.engine.hooks.identity import IdentityVerifier, issuers_from_config
from agentgov.engine.hooks.model_tools import ModelToolsHook
from agentgov.engine.hooks.pii.hook import PiiConfigError, PiiHook, settings_from_config
from agentgov.engine.hooks.registry import HookLoadError, HookSlot, assemble
from agentgov.engine.hooks.tool_filter import ToolListHook
from agentgov.engine.model import Subject
from agentgov.engine.pipeline import Governor, GovernorOptions
from agentgov.engine.pipeline.approvals import ApprovalStage
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.policy_set import (
    NO_POLICIES,
    PolicySet,
    UnavailableBackend,
    policy_set_builder,
    reload_builder,
)
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.telemetry.tracing import TracingSettings, TracingUnavailable, check_exporter


def build_backend(cfg: Config) -> DecisionBackend:
    return load_policy_set(cfg).backend


def _reader(cfg: Config) -> ResultReader:
    return decision_from_envoy_result if cfg.input_format == "opa-envoy" else decision_from_document


def load_policy_set(cfg: Config) -> PolicySet:
    """The configured policies from `paths` (or a remote OPA), read once. A `policy.bundle` source
    is loaded by the Governor's reloader when it starts (`build_governor`), not here."""
    if cfg.input_format == "opa-envoy" and cfg.engine == "cedar":
        raise cfg.problem("policy.input_format opa-envoy needs Rego (engine rego or opa): "
                          "OPA-Envoy policies are Rego")
    if cfg.engine == "opa":
        if not cfg.opa_url:
            raise cfg.problem("policy.engine opa needs policy.opa_url")
        # opa-python-client and requests (~5 MB): only in a worker that asks a remote OPA.
        from agentgov.engine.backends.opa_remote import RemoteOpaBackend

        return PolicySet(RemoteOpaBackend(cfg.opa_url, cfg.rule, reader=_reader(cfg)), source=cfg.opa_url)
    roots = [cfg.base / p for p in cfg.paths]
    sources = discover(roots)
    build = policy_set_builder(cfg.engine, rule=cfg.rule, reader=_reader(cfg))
    # One bundle file: its manifest revision and archive digest, as if a bundle source had loaded it.
    revision, digest = sources.bundles[0] if len(roots) == 1 and len(sources.bundles) == 1 else (sources.revision, "")
    try:
        policy = build(sources, revision, digest, None, ", ".join(cfg.paths))
    except PolicyLoadError as exc:
        if any(p.code == NO_POLICIES for p in exc.problems):
            raise cfg.problem(f"no {cfg.engine} policies under {', '.join(cfg.paths)}", "policy.paths") from None
        raise
    if cfg.serve_bundles:
        policy = replace(policy, blob=_bundle_of(roots))
    return policy


def _bundle_of(roots: list[Path]) -> bytes:
    """What `serve_bundles` hands OPA agents when the policies come from folders: the bundle
    `agentgov build` would make of them (a single bundle file is served as it is)."""
    if len(roots) == 1 and roots[0].is_file():
        return roots[0].read_bytes()
    return build_bundle(roots)


def build_identity(cfg: Config) -> IdentityVerifier | None:
    """The identity verifier the configuration describes (None: identity off, allowed only with
    identity.required: false). Doors and `agentgov approvals` (approvers authenticate) share it."""
    identity = None
    if cfg.identity.get("issuers") or cfg.identity.get("api_keys"):
        try:
            issuers = issuers_from_config(cfg.identity["issuers"], cfg.base) if cfg.identity.get("issuers") else []
            api_keys = api_keys_from_config(cfg.identity["api_keys"]) if cfg.identity.get("api_keys") else []
            identity = IdentityVerifier(issuers, api_keys=api_keys, leeway_s=float(cfg.identity.get("leeway_s", 30)),
                                        api_key_header=str(cfg.identity.get("api_key_header", DEFAULT_API_KEY_HEADER)))
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise cfg.problem(f"identity: {exc}", leading_key(str(exc)) or "identity") from None
    elif cfg.identity.get("required", True):
        raise cfg.problem("identity has no issuers and no api_keys: every request would be anonymous "
                          "(set identity.required: false to accept that)")
    return identity


def build_governor(cfg: Config) -> Governor:
    """The Governor for this config. With `policy.bundle`, it starts with no policy (every check
    refused with 503 policy_unavailable) and its reloader loads the bundle when the Governor starts,
    from the source or else the persisted last good copy; likewise `policy.shadow`'s candidate."""
    identity = build_identity(cfg)
    if (cfg.bundle or cfg.shadow) and cfg.engine == "opa":
        raise cfg.problem("policy.bundle and policy.shadow load bundles into agentgov's engines (rego or "
                          "cedar); a remote OPA loads its own bundles")
    if cfg.bundle is not None:
        policy = PolicySet(UnavailableBackend(f"no bundle loaded yet from {cfg.bundle.source}"),
                           source=cfg.bundle.source)
    else:
        policy = load_policy_set(cfg)
    governor = Governor(policy, identity, GovernorOptions(
        allow_truncated_body=bool(cfg.allow_truncated_body), mcp_paths=tuple(cfg.mcp_paths),
        input_format=cfg.input_format, can_redact=bool(cfg.ext_proc), max_batch=cfg.max_batch,
        tracing=_tracing(cfg)),
        hooks=build_hooks(cfg, policy.data), approvals=_approvals(cfg))
    build = reload_builder(cfg.engine, rule=cfg.rule, reader=_reader(cfg))
    for name, settings, activate in (("active", cfg.bundle, governor.swap), ("shadow", cfg.shadow, governor.set_shadow)):
        if settings is None:
            continue
        try:
            source = source_for(settings.source, cfg.base, token=settings.token, insecure=settings.insecure)
        except PolicyLoadError as exc:
            raise cfg.problem(f"policy.{'bundle' if name == 'active' else name}.source: "
                              f"{exc.problems[0].message}") from None
        governor.attach(BundleReloader(name, source, build, activate, settings.reload))
    return governor


def _tracing(cfg: Config) -> TracingSettings | None:
    """The tracing settings, with the exporter checked now: a worker must not find out at start."""
    if not cfg.tracing:
        return None
    settings = TracingSettings(**cfg.tracing)
    try:
        check_exporter(settings.protocol)
    except TracingUnavailable as exc:
        raise cfg.problem(f"tracing: {exc}", "tracing") from None
    return settings


def _approvals(cfg: Config) -> ApprovalStage | None:
    """The approvals stage when agentgov.yaml has an `approvals:` section (docs/approvals.md)."""
    if cfg.approvals is None:
        return None
    try:
        settings = approval_settings(cfg.approvals)
        signer = link_signer(settings, cfg.base)
    except (ApprovalsConfigError, LinkKeyError) as exc:
        raise cfg.problem(str(exc)) from None
    try:
        audit = audit_settings(cfg.audit, cfg.base)
    except AuditConfigError as exc:
        raise cfg.problem(str(exc)) from None
    recorder: Recorder | None = None
    if audit is not None:
        async def record_step(approval: Approval, event: str, detail: str) -> None:
            await record(audit, approval.id, Subject("agentgov"), event, detail, approval)

        recorder = record_step

    notifier = Notifier(settings.webhooks, signer, recorder) if settings.webhooks else None
    return ApprovalStage(settings, open_approval_store(settings.store, cfg.base), notifier, recorder)


def build_hooks(cfg: Config, policy_data: Mapping[str, Any] | None = None) -> list[HookSlot]:
    """The configured hooks after identity, in order. Built-ins: `pii` (unless `pii.enabled: false`)
    `tools_list` and `model_tools`; third-party hooks from the entry-point group `agentgov.hooks`.
    `policy_data`: the data document the policy set loaded from `policy.paths` (the budget hook's
    per-tenant caps are read from it; without it the folders are read again)."""
    builtins: dict[str, Hook] = {}
    pii = dict(cfg.pii)
    enabled = pii.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise cfg.problem("pii.enabled must be true or false")
    if enabled:
        try:
            builtins["pii"] = PiiHook(settings_from_config(pii))
        except PiiConfigError as exc:
            raise cfg.problem(str(exc)) from None
    builtins["tools_list"] = ToolListHook()
    builtins["model_tools"] = ModelToolsHook()
    if cfg.budgets is not None:
        try:
            budget = budget_settings(cfg.budgets)
            if cfg.engine != "opa" and cfg.bundle is None:
                # A remote OPA's data is not here: its tenants get the configured caps. A bundle's
                # caps are read when it is activated (BudgetHook.check_policy_data).
                data = policy_data if policy_data is not None else discover([cfg.base / p for p in cfg.paths]).data
                budget = replace(budget, tenant_caps=tenant_caps_from_data(data, budget.limits))
        except BudgetConfigError as exc:
            raise cfg.problem(str(exc)) from None
        builtins["budget"] = BudgetHook(budget, open_store(budget, cfg.base), settled_by_responses=bool(cfg.ext_proc))
    try:
        audit = audit_settings(cfg.audit, cfg.base)
    except (AuditConfigError, AuditError) as exc:
        raise cfg.problem(str(exc)) from None
    if audit is not None:
        builtins["audit"] = AuditHook(audit, cfg.worker_index)
    try:
        return assemble(list(cfg.hooks) if cfg.hooks is not None else None, builtins)
    except HookLoadError as exc:
        raise cfg.problem(str(exc)) from None
