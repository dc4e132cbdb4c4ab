"""Wires the identity adapters (argon2 hasher, JWT signing keys, credential vault) from settings."""

from __future__ import annotations

from commands.identity import Identity
from domain.login import LoginPolicy
from infra.config import Settings
from infra.credentials import SQLiteCredentialVault
from infra.jwt import JwtTokens, SigningKeys
from infra.passwords import from_setting

AUDIENCE = "csm-api"
LEEWAY_SECONDS = 30.0


def signing_keys(settings: Settings) -> SigningKeys:
    """Retired keys stay published until every token they signed has expired (plus the leeway)."""
    return SigningKeys(settings.signing_keys_dir, settings.jwt_algorithm,
                       publish_for=settings.access_token_ttl + LEEWAY_SECONDS)


def build_identity(settings: Settings, vault: SQLiteCredentialVault) -> Identity:
    policy = LoginPolicy(max_failures=settings.login_max_failures, lockout_seconds=settings.login_lockout_seconds,
                         backoff_base=settings.login_backoff_base)
    tokens = JwtTokens(signing_keys(settings), issuer=settings.base_url, audience=AUDIENCE, leeway=LEEWAY_SECONDS)
    return Identity(vault=vault, passwords=from_setting(settings.argon2), tokens=tokens, policy=policy,
                    access_ttl=settings.access_token_ttl, refresh_ttl=settings.refresh_token_ttl,
                    mfa_roles=frozenset(settings.mfa_required_roles))
