"""The ACME account aggregate and its keys (RFC 8555 7.3): events, folds and the decisions to claim a key and to
change it.

An account's id is its first key's RFC 7638 thumbprint, and stays its id after a key change (RFC 8555 7.3.5), so its
certificates' ownership tags stay true. Each key an account signs with is claimed by a stream of its own
(``acme-key-<thumbprint>``, created at version 0), so the store refuses one key to two accounts; a key an account
gave up stays claimed by it (it opens no other account)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from domain.acme_problems import AcmeProblem
from domain.events import Payload, event, resumable

ACCOUNT_STREAM_TYPE = "acme_account"
KEY_STREAM_TYPE = "acme_account_key"


@event("acme.account_created")
class AccountCreated(Payload, frozen=True, kw_only=True):
    account_id: str  # the RFC 7638 thumbprint of jwk
    jwk: dict[str, str]  # the public key only
    contact: list[str]
    eab_key_id: str


@event("acme.account_key_changed")
class AccountKeyChanged(Payload, frozen=True, kw_only=True):
    old_thumbprint: str
    new_thumbprint: str
    jwk: dict[str, str]  # the new public key only


@event("acme.account_key_bound")
class AccountKeyBound(Payload, frozen=True, kw_only=True):
    account_id: str  # the account this key signs for (in the key's own stream, acme-key-<thumbprint>)


@event("acme.account_deactivated")
class AccountDeactivated(Payload, frozen=True, kw_only=True):
    pass


class Account(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "absent"  # absent | valid | deactivated
    created: AccountCreated | None = None
    key_thumbprint: str = ""  # the RFC 7638 thumbprint of the key that signs for it now
    jwk: dict[str, str] | None = None  # that key


class KeyInUse(AcmeProblem):
    """keyChange to a key another account has (RFC 8555 7.3.5: 409, Location that account)."""

    def __init__(self, account_id: str) -> None:
        super().__init__("malformed", "the new key is already the key of another account", field="payload.jwk",
                         status=409)
        self.account_id = account_id


def account_stream_id(account_id: str) -> str:
    return f"acme-account-{account_id}"


def key_stream_id(thumbprint: str) -> str:
    return f"acme-key-{thumbprint}"


@resumable
def fold_account(payloads: Iterable[Payload], start: Account | None = None) -> Account:
    state = start or Account()
    for payload in payloads:
        match payload:
            case AccountCreated():
                state = Account(status="valid", created=payload, key_thumbprint=payload.account_id, jwk=payload.jwk)
            case AccountKeyChanged():
                state = msgspec.structs.replace(state, key_thumbprint=payload.new_thumbprint, jwk=payload.jwk)
            case AccountDeactivated():
                state = msgspec.structs.replace(state, status="deactivated")
    return state


@resumable
def fold_key(payloads: Iterable[Payload], start: str | None = None) -> str | None:
    """The account a key is claimed by (None: no account has claimed it)."""
    state = start
    for payload in payloads:
        if isinstance(payload, AccountKeyBound):
            state = payload.account_id
    return state


def decide_claim_key(owner: str | None, account_id: str) -> list[Payload]:
    """A key signs for one account: claimed once; a claim by another account is ``KeyInUse``."""
    if owner == account_id:
        return []
    if owner is not None:
        raise KeyInUse(owner)
    return [AccountKeyBound(account_id=account_id)]


def decide_change_key(state: Account, old_thumbprint: str | None, new_thumbprint: str,
                      new_jwk: dict[str, str]) -> list[Payload]:
    """RFC 8555 7.3.5: ``oldKey`` is the account's key now, and the new key is another one."""
    if state.status != "valid":
        raise AcmeProblem("unauthorized", f"the account is {state.status}", field="protected.kid", status=403)
    if state.key_thumbprint == new_thumbprint:
        raise AcmeProblem("malformed", "the new key is the account's key already", field="payload.jwk")
    if old_thumbprint != state.key_thumbprint:
        raise AcmeProblem("malformed", "oldKey is not the account's key", field="payload.oldKey")
    return [AccountKeyChanged(old_thumbprint=old_thumbprint, new_thumbprint=new_thumbprint, jwk=new_jwk)]
