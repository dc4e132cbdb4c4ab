"""The HTTP API's authorization contract: the permission every /v1 route and method needs, and its tenant scope.

It is the documented contract that tests/integration/test_authz_matrix.py checks against the
running app for every role, and that docs/security.md prints (``python -m api.permissions``
rewrites it). The /v1 guard (api/auth.py) reads it for one thing: ``refuse_early`` refuses, before
the body is read, what a route's rule refuses from the caller's roles alone. Handlers still call
``commands.authz.authorize`` themselves and stay the authority (the CLI has no guard); the matrix
runs every route with the early refusal and without it, so neither can drift from this table.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from litestar import Litestar

import commands
from commands.authz import PERMISSIONS, ROLES, Principal, authorize, holds
from commands.tenants import WHILE_SUSPENDED, WhileSuspended
from domain.compliance import RULES as COMPLIANCE_RULES

Scope = Literal["public", "platform", "tenant", "object", "confined", "self"]
SCOPES: dict[str, str] = {
    "public": "no token needed",
    "platform": "platform-wide principals only: a tenant-scoped token is refused (403) whatever its roles",
    "tenant": "acts in the tenant named by the path, the body or `?tenant_id` (default: the caller's); "
              "another tenant's is refused (403)",
    "object": "acts on the object in the path; another tenant's object answers 404, as if it did not exist",
    "confined": "a list or stream: a tenant-scoped caller sees only its own tenant's items; naming another "
                "tenant (`?tenant_id`) is refused (403)",
    "self": "acts on the caller's own account: any valid token",
}


@dataclass(frozen=True, slots=True)
class Rule:
    permissions: tuple[str, ...]  # every one is needed
    scope: Scope
    key_permissions: tuple[str, ...] = ()  # needed as well when the response carries a private key
    note: str = ""


_CA_OBJECT = ("ca:read",)  # a CA command first reads the CA (404 across tenants), then checks its own permission
ROUTE_PERMISSIONS: dict[tuple[str, str], Rule] = {
    ("POST", "/v1/tenants"): Rule(("tenant:create",), "platform"),
    ("GET", "/v1/tenants"): Rule(("tenant:read",), "confined"),
    ("GET", "/v1/tenants/{tenant_id}"): Rule(("tenant:read",), "tenant"),
    ("GET", "/v1/tenants/{tenant_id}/usage"): Rule(("tenant:read",), "tenant",
                                                   note="what the tenant holds against its quotas"),
    ("GET", "/v1/tenants/{tenant_id}/compromised-keys"): Rule(
        ("cert:read",), "tenant", note="hashes of keys reported compromised: never certified again in the tenant"),
    ("POST", "/v1/tenants/{tenant_id}/compromised-keys"): Rule(
        ("cert:revoke",), "tenant", note="report a key found compromised (certificate_id; ca_id needs ca:manage "
        "too): never certified again in the tenant, its trusted certificates revoked"),
    ("POST", "/v1/tenants/{tenant_id}/compromised-keys/{public_key_sha256}/lift"): Rule(
        ("key:unblock",), "tenant", note="lift a block reported in error (a reason, audited): nothing is un-revoked"),
    ("GET", "/v1/tenants/{tenant_id}/compliance"): Rule(
        ("cert:read", "ca:read"), "tenant", note="findings of the compliance rules (below) over its certificates and "
        "CAs"),
    ("GET", "/v1/tenants/{tenant_id}/discovered"): Rule(
        ("cert:read",), "tenant", note="endpoints scanned, what each served last, and the certificate it matches"),
    ("POST", "/v1/tenants/{tenant_id}/discovered"): Rule(
        ("discovery:record",), "tenant", note="observations a scanner made elsewhere; the server connects to "
        "nothing a request names"),
    ("GET", "/v1/tenants/{tenant_id}/analytics"): Rule(
        ("audit:read",), "tenant", note="daily counts of security-relevant events, access denials among them"),
    ("POST", "/v1/tenants/{tenant_id}/rename"): Rule(("tenant:update",), "tenant"),
    ("PUT", "/v1/tenants/{tenant_id}/quotas"): Rule(("tenant:create",), "platform",
                                                    note="bounds on what a tenant may hold and issue (Quotas below)"),
    ("POST", "/v1/tenants/{tenant_id}/quotas"): Rule(("tenant:create",), "platform",
                                                     note="bounds on what a tenant may hold and issue (Quotas below)"),
    ("GET", "/v1/tenants/{tenant_id}/policy"): Rule(("tenant:read",), "tenant"),
    ("PUT", "/v1/tenants/{tenant_id}/policy"): Rule(("tenant:update",), "tenant",
                                                    note="a tenant narrows what its certificates may say"),
    ("POST", "/v1/tenants/{tenant_id}/policy"): Rule(("tenant:update",), "tenant",
                                                     note="a tenant narrows what its certificates may say"),
    ("POST", "/v1/tenants/{tenant_id}/suspend"): Rule(("tenant:suspend",), "platform"),
    ("POST", "/v1/tenants/{tenant_id}/resume"): Rule(("tenant:suspend",), "platform"),
    ("GET", "/v1/audit/events"): Rule(("audit:read",), "confined"),
    ("GET", "/v1/audit/verify"): Rule(("audit:verify",), "platform", note="re-verifies every tenant's chains"),
    ("GET", "/v1/events/stream"): Rule(("events:stream",), "confined"),
    ("POST", "/v1/cas"): Rule(("ca:create",), "tenant"),
    ("GET", "/v1/cas"): Rule(("ca:read",), "confined"),
    ("POST", "/v1/cas/import"): Rule(("ca:create",), "tenant"),
    ("POST", "/v1/cas/offline-intermediate"): Rule(("ca:create",), "tenant"),
    ("GET", "/v1/cas/{ca_id}"): Rule(("ca:read",), "object"),
    ("GET", "/v1/cas/{ca_id}/certificates"): Rule(("ca:read",), "object"),
    ("GET", "/v1/cas/{ca_id}/certificate"): Rule((), "public",
                                                 note="the caIssuers URL of issued certificates: relying parties have no token"),
    ("GET", "/v1/cas/{ca_id}/chain"): Rule(("ca:read",), "object"),
    ("POST", "/v1/cas/{ca_id}/certificate"): Rule((*_CA_OBJECT, "ca:create"), "object"),
    ("GET", "/v1/cas/{ca_id}/crl-request"): Rule(("ca:read",), "object", note="an offline key's CRL ceremony"),
    ("GET", "/v1/cas/{ca_id}/compromise"): Rule(("ca:read",), "object",
                                                note="a root's compromise rollovers and what is left to re-issue"),
    ("POST", "/v1/cas/{ca_id}/crls"): Rule((*_CA_OBJECT, "ca:manage"), "object",
                                           note="a CRL the CA's offline key signed; it must list every revocation"),
    ("POST", "/v1/cas/{ca_id}/cross-sign"): Rule((*_CA_OBJECT, "ca:manage"), "object"),
    ("POST", "/v1/cas/{ca_id}/rollover"): Rule((*_CA_OBJECT, "ca:manage"), "object"),
    ("POST", "/v1/cas/{ca_id}/disable"): Rule((*_CA_OBJECT, "ca:manage"), "object"),
    ("POST", "/v1/cas/{ca_id}/enable"): Rule((*_CA_OBJECT, "ca:manage"), "object"),
    ("POST", "/v1/cas/{ca_id}/revoke"): Rule((*_CA_OBJECT, "ca:manage"), "object",
                                             note="its issuers' CRLs list it; everything under it is untrusted"),
    ("GET", "/v1/cas/{ca_id}/crl"): Rule((), "public", note="for relying parties, as is `/ocsp/{ca_id}`"),
    ("POST", "/v1/certificates"): Rule(("cert:issue",), "tenant",
                                       note="names must match the tenant policy's allowed patterns"),
    ("GET", "/v1/certificates"): Rule(("cert:read",), "confined"),
    ("GET", "/v1/certificates/{certificate_id}"): Rule(("cert:read",), "object"),
    ("POST", "/v1/certificates/{certificate_id}/revoke"): Rule(("cert:revoke",), "object",
                                                               note="on the CRL and in OCSP before it returns"),
    ("POST", "/v1/certificates/{certificate_id}/renew"): Rule(("cert:issue",), "object",
                                                              note="same CA and profile; checked like an issuance"),
    ("GET", "/v1/certificates/{certificate_id}/deployments"): Rule(
        ("cert:read",), "object", note="the nodes it was deployed to (csm cluster deploy) and its state on each"),
    ("GET", "/v1/deployments"): Rule(("cert:read",), "confined",
                                     note="what each node holds as far as the store knows, its generations kept"),
    ("GET", "/v1/certificates/{certificate_id}/export"): Rule(
        ("cert:read",), "object", key_permissions=("key:export",),
        note="pkcs12, jks and pem with include_key carry the private key: key:export too (audited)"),
    ("GET", "/v1/profiles"): Rule(("profile:read",), "tenant"),
    ("POST", "/v1/profiles"): Rule(("profile:manage",), "tenant"),
    ("PUT", "/v1/profiles/{name}"): Rule(("profile:manage",), "tenant"),
    ("POST", "/v1/profiles/{name}/retire"): Rule(("profile:manage",), "tenant"),
    ("GET", "/v1/algorithms"): Rule(("profile:read",), "confined", note="no tenant data"),
    # identity (api/identity.py, api/sign_in.py); granting never escalates: a caller grants only roles
    # (and issues only keys) whose permissions it holds itself
    ("POST", "/v1/auth/token"): Rule((), "public", note="sign-in: password, refresh_token, client_credentials"),
    ("POST", "/v1/auth/revoke"): Rule((), "public", note="sign-out (RFC 7009): holding the token is the authority"),
    ("POST", "/v1/auth/totp"): Rule((), "self", note="user accounts only"),
    ("POST", "/v1/auth/totp/confirm"): Rule((), "self", note="user accounts only"),
    ("POST", "/v1/auth/sessions/revoke-all"): Rule((), "self", note="sign out everywhere: local user accounts only"),
    ("POST", "/v1/users"): Rule(("user:manage",), "tenant", note="no escalation"),
    ("GET", "/v1/users"): Rule(("user:read",), "tenant"),
    ("GET", "/v1/users/{username}"): Rule(("user:read",), "tenant"),
    ("POST", "/v1/users/{username}/roles"): Rule(("user:manage",), "tenant", note="no escalation"),
    ("DELETE", "/v1/users/{username}/roles/{role}"): Rule(("user:manage",), "tenant", note="no escalation"),
    ("POST", "/v1/users/{username}/password"): Rule(("user:manage",), "tenant",
                                                   note="no escalation: needs the user's roles' permissions"),
    ("POST", "/v1/users/{username}/disable"): Rule(("user:manage",), "tenant"),
    ("POST", "/v1/users/{username}/enable"): Rule(("user:manage",), "tenant"),
    ("POST", "/v1/users/{username}/unlock"): Rule(("user:manage",), "tenant"),
    ("DELETE", "/v1/users/{username}/totp"): Rule(("user:manage",), "tenant"),
    ("POST", "/v1/service-accounts"): Rule(("serviceaccount:manage",), "tenant"),
    ("GET", "/v1/service-accounts"): Rule(("user:read",), "tenant"),
    ("GET", "/v1/service-accounts/{name}"): Rule(("user:read",), "tenant"),
    ("POST", "/v1/service-accounts/{name}/keys"): Rule(("serviceaccount:manage",), "tenant", note="no escalation"),
    ("DELETE", "/v1/service-accounts/{name}/keys/{key_id}"): Rule(("serviceaccount:manage",), "tenant"),
    ("POST", "/v1/service-accounts/{name}/disable"): Rule(("serviceaccount:manage",), "tenant",
                                                           note="revokes every key of the account"),
    ("POST", "/v1/service-accounts/{name}/enable"): Rule(("serviceaccount:manage",), "tenant",
                                                          note="its old keys stay revoked"),
    # ACME external account binding keys (api/acme_eab.py); the ACME protocol itself (/acme/{tenant_id}/...) is signed
    # by account keys (JWS), outside /v1 and its tokens
    ("POST", "/v1/tenants/{tenant_id}/acme/eab-keys"): Rule(("acme:manage",), "tenant",
                                                            note="the HMAC key is shown once"),
    ("GET", "/v1/tenants/{tenant_id}/acme/eab-keys"): Rule(("acme:manage",), "tenant"),
    ("DELETE", "/v1/tenants/{tenant_id}/acme/eab-keys/{key_id}"): Rule(("acme:manage",), "tenant"),
    # webhooks (api/webhooks.py): another tenant's webhook id reads as not found
    ("POST", "/v1/webhooks"): Rule(("webhook:manage",), "tenant", note="the signing secret is shown once"),
    ("GET", "/v1/webhooks"): Rule(("webhook:read",), "tenant"),
    ("GET", "/v1/webhooks/{webhook_id}"): Rule(("webhook:read",), "tenant"),
    ("PATCH", "/v1/webhooks/{webhook_id}"): Rule(("webhook:manage",), "tenant"),
    ("DELETE", "/v1/webhooks/{webhook_id}"): Rule(("webhook:manage",), "tenant"),
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): Rule(("webhook:manage",), "tenant",
                                                              note="the new secret is shown once"),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): Rule(("webhook:read",), "tenant"),
}


def refuse_early(principal: Principal, method: str, path: str | None) -> None:
    """403 (Forbidden) for a caller whose roles alone rule the route out, whatever the request says.

    Every permission the route needs must be held; a platform route also refuses a tenant-scoped
    caller. Tenants and objects named by the request are left to the handler (that needs the body).
    """
    rule = ROUTE_PERMISSIONS.get((method, path or ""))
    if rule is None:
        return
    for permission in rule.permissions:
        if rule.scope == "platform":
            authorize(principal, permission)  # no tenant: a tenant-scoped caller is refused
        else:
            holds(principal, permission)


def operations(app: Litestar, prefix: str = "/v1") -> set[tuple[str, str]]:
    """Every (method, path) the app serves under ``prefix``; Litestar's automatic OPTIONS handlers left out."""
    found = set()
    for route in app.routes:
        if not route.path_format.startswith(prefix):
            continue
        for method, handler in getattr(route, "route_handler_map", {}).items():
            if method == "OPTIONS" and handler[0].handler_name == "options_handler":
                continue  # generated by Litestar for CORS pre-flight; CORS is off, and it touches nothing
            found.add((method, route.path_format))
    return found


def unlisted(app: Litestar) -> list[str]:
    """Operations the app serves that this table does not cover, as "METHOD /path"."""
    return sorted(f"{method} {path}" for method, path in operations(app) - ROUTE_PERMISSIONS.keys())


# docs/security.md ------------------------------------------------------------------------
DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
BEGIN, END = "<!-- BEGIN GENERATED: python -m api.permissions -->", "<!-- END GENERATED -->"


def while_suspended() -> dict[str, WhileSuspended]:
    """Every command handler's rule in a suspended tenant (each module declares its own when imported)."""
    for info in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"commands.{info.name}")
    return dict(sorted(WHILE_SUSPENDED.items(), key=lambda item: (not item[1].refused, item[0])))


def render() -> str:
    """The role matrix, the route table, what a suspended tenant may do and the compliance rules, as Markdown."""
    roles = list(ROLES)
    lines = ["### Roles and permissions", "", "| permission | " + " | ".join(roles) + " |",
             "|---|" + "---|" * len(roles)]
    for permission, meaning in PERMISSIONS.items():
        marks = " | ".join("yes" if permission in ROLES[role] else "" for role in roles)
        lines.append(f"| `{permission}`: {meaning} | {marks} |")
    lines += ["", "### Routes", "", "| method | path | needs | scope | note |", "|---|---|---|---|---|"]
    for (method, path), rule in sorted(ROUTE_PERMISSIONS.items(), key=lambda item: (item[0][1], item[0][0])):
        needs = ", ".join(f"`{p}`" for p in rule.permissions) or "none"
        if rule.key_permissions:
            needs += " (+ " + ", ".join(f"`{p}`" for p in rule.key_permissions) + " with a private key)"
        lines.append(f"| {method} | `{path}` | {needs} | {rule.scope} | {rule.note} |")
    lines += ["", "Scopes:", ""] + [f"- **{name}**: {meaning}" for name, meaning in SCOPES.items()]
    lines += ["", "### Command handlers in a suspended tenant", "", "(`commands/tenants.py`: see \"Suspended tenants\" "
              "below)", "", "| handler (`commands/`) | while suspended | why |", "|---|---|---|"]
    for name, rule in while_suspended().items():
        lines.append(f"| `{name}` | {'refused' if rule.refused else 'allowed'} | {rule.reason} |")
    lines += ["", "### Compliance rules", "", "(`domain/compliance.py`: `GET /v1/tenants/{id}/compliance`, "
              "`csm tenant compliance`)", "", "| rule | severity | finding | remedy |", "|---|---|---|---|"]
    for name, rule in COMPLIANCE_RULES.items():
        lines.append(f"| `{name}` | {rule.severity} | {rule.title} | {rule.remedy} |")
    return "\n".join(lines)


def documented(text: str) -> str:
    """The generated part of ``text`` (between the markers)."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip()


def rewrite(path: Path = DOC) -> None:
    text = path.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + render() + "\n" + text[end:])


if __name__ == "__main__":
    rewrite(Path(sys.argv[1]) if len(sys.argv) > 1 else DOC)
