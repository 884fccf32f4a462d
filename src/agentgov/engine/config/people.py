"""Who a person is, for the doors approvers use (the CLI, the console): verified from a JWT or an
API key by the configuration's identity settings, exactly as a caller is, never taken on their
word."""

from __future__ import annotations

from collections.abc import Mapping

from agentgov.engine.config.build import build_identity
from agentgov.engine.config.settings import Config
from agentgov.engine.hooks.audit.hook import AuditConfigError, AuditSettings
from agentgov.engine.hooks.audit.hook import settings_from_config as audit_settings
from agentgov.engine.hooks.identity import IdentityError
from agentgov.engine.model import Subject


class NotAuthenticated(ValueError):
    """The person could not be verified: the message says why (never the credential)."""


def verify_person(cfg: Config, *, token: str | None = None, api_key: str | None = None) -> Subject:
    if bool(token) == bool(api_key):
        raise NotAuthenticated("authenticate with one of a JWT or an API key")
    try:
        verifier = build_identity(cfg)
    except ValueError as exc:  # a configuration problem (ConfigError)
        raise NotAuthenticated(f"config error: {exc}") from None
    if verifier is None:
        raise NotAuthenticated("identity is off in this configuration: nobody can be authenticated")
    headers: Mapping[str, str] = {"authorization": f"Bearer {token}"} if token else \
        {verifier.api_key_header: str(api_key)}
    try:
        subject = verifier.verify_headers(headers)
    except IdentityError as exc:
        raise NotAuthenticated(f"not authenticated: {exc.reason}") from None
    if not subject.authenticated:
        raise NotAuthenticated("not authenticated")
    return subject


def audit_of(cfg: Config) -> AuditSettings | None:
    """Where approval evidence goes (None: audit is off); a bad `audit:` section is a ValueError."""
    try:
        return audit_settings(cfg.audit, cfg.base)
    except AuditConfigError as exc:
        raise ValueError(f"config error: {exc}") from None
